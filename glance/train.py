"""Stage the pair, write the configs, run both SimpleTuner phases, record the run.

The flow: `plan_run` turns the user's settings into a `RunPlan` (checks only, nothing written);
`write_configs` stages the pair and writes the three JSON files; `train` runs the phases that are
not already done and keeps the manifest up to date after each one.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from glance import __version__
from glance.families import DEFAULT_MODEL, FAMILIES, Family, GlanceError, model_schedule, resolve_family
from glance.files import check_writable_dir, needs_writing, write_atomic
from glance.hub import ModelSource, resolve_model
from glance.lock import RunLock
from glance.manifest import (
    MANIFEST_NAME,
    PHASES,
    WEIGHTS_NAME,
    PhaseName,
    PhaseRecord,
    RunManifest,
    load_manifest,
    package_versions,
)
from glance.memory import QuantizeChoice, TrainingPlan, model_sizes, oom_advice, plan_training
from glance.pair import DEFAULT_IMAGE, ImagePair, check_pair, stage_pair
from glance.progress import PhaseProgress, Reporter
from glance.schedule import TimestepLists, default_lists, parse_lists, to_simpletuner
from glance.simpletuner import (
    CPU_SHIM_DIR,
    DataloaderConfig,
    ImageDataset,
    TextEmbedsDataset,
    TrainingConfig,
    accelerate_config_yaml,
    add_adapter_metadata,
    dump_json,
    failure_cause,
    find_simpletuner,
    phase_command,
    phase_env,
)

Device = Literal["auto", "cuda", "cpu"]


class TrainSettings(BaseModel):
    """What the user chose; every `glance configs` / `glance train` option maps to one field."""

    model_config = ConfigDict(extra="forbid")

    image: Path = DEFAULT_IMAGE
    model: str = DEFAULT_MODEL
    revision: str | None = None  # of a Hub model: branch, tag or commit (default: main)
    family: str | None = None
    resolution: int = Field(1024, ge=64)
    steps: int | None = Field(None, gt=0)
    rank: int | None = Field(None, gt=0)
    learning_rate: float | None = Field(None, gt=0)
    slow_timesteps: str | None = None
    fast_timesteps: str | None = None
    output_dir: Path = Path("output")
    config_dir: Path = Path("config")
    device: Device = "auto"
    seed: int = 0
    separate_caches: bool = False  # --parallel: two phases at once must not write one cache
    quantize: QuantizeChoice = "auto"  # the memory plan (glance/memory.py)
    gradient_checkpointing: bool | None = None  # None: as the plan says
    gpu_memory: float | None = Field(None, gt=0)  # GiB of the card to plan for; None: nvidia-smi's


def cuda_available(device: Device) -> bool:
    if device != "auto":
        return device == "cuda"
    import torch

    return torch.cuda.is_available()


@dataclass
class RunPlan:
    """Everything about a run that can be known before anything is written.

    SimpleTuner runs inside the run folder (the output dir), so the paths in its configs are
    relative to it: it writes `debug.log` into its working folder (truncating any that is there)
    and reads `config/config.env` from it, neither of which may touch the user's own folder.
    """

    settings: TrainSettings
    source: ModelSource  # the model's folder (None until a Hub model is downloaded), id and revision
    family: Family
    pair: ImagePair
    lists: TimestepLists
    cuda: bool
    dataloaders: dict[PhaseName, tuple[Path, DataloaderConfig]]
    configs: dict[PhaseName, TrainingConfig]
    config_paths: dict[PhaseName, Path]
    memory: TrainingPlan

    @property
    def output_dir(self) -> Path:
        return self.settings.output_dir

    @property
    def dataset_dir(self) -> Path:
        return self.output_dir / "dataset"

    @property
    def cache_dir(self) -> Path:
        return self.output_dir / "cache"

    @property
    def manifest_path(self) -> Path:
        return self.output_dir / MANIFEST_NAME

    def lora_dir(self, phase: PhaseName) -> Path:
        return self.output_dir / self.configs[phase].output_dir

    def log_path(self, phase: PhaseName) -> Path:
        return self.output_dir / f"glance-{phase}.log"

    def files(self) -> dict[Path, str]:
        """The JSON files of this run and their text."""
        texts = {path: dump_json(loader.to_json()) for path, loader in self.dataloaders.values()}
        texts.update({self.config_paths[p]: dump_json(self.configs[p].to_json()) for p in PHASES})
        return texts

    def inputs_sha256(self, phase: PhaseName) -> str:
        """What a phase's weights depend on: its config, its dataloader, and the pair's content."""
        _, loader = self.dataloaders[phase]
        digest = hashlib.sha256(dump_json(self.configs[phase].to_json()).encode())
        digest.update(dump_json(loader.to_json()).encode())
        digest.update(self.pair.fingerprint.encode())
        return digest.hexdigest()


def resolve_lists(settings: TrainSettings, family: Family, model: str) -> TimestepLists:
    """The user's lists, or the model's own (its 50-step schedule at the training resolution)."""
    given = parse_lists(settings.slow_timesteps, settings.fast_timesteps)
    if given is not None:
        return given
    return default_lists(family, model_schedule(model, family), settings.resolution)


def run_relative(path: Path, run_dir: Path) -> str:
    """`path` as seen from the run folder, where SimpleTuner runs (see RunPlan)."""
    return os.path.relpath(Path(path).resolve(), Path(run_dir).resolve())


def plan_run(settings: TrainSettings, *, fetch: bool = False) -> RunPlan:
    """Check the inputs and compose the three configs. Writes nothing of the user's.

    The model is looked up first (a Hub refusal fails here, in seconds); with `fetch` a Hub model
    missing from the cache is then downloaded into it, after the pair has passed its checks.
    Without `fetch` (--dry-run, `glance configs`) a model not yet downloaded is planned from
    what is known, and the configs name its Hub id.
    """
    source = resolve_model(settings.model, revision=settings.revision, fetch=False)
    # The pair is checked before a download; the family (known once the model is there) may ask more.
    smallest_side = min(f.min_image_side for f in FAMILIES.values())
    pair = check_pair(settings.image, smallest_side)
    if fetch and source.folder is None:
        source = resolve_model(settings.model, revision=settings.revision, fetch=True)
    family = resolve_family(source.path_or_id, settings.family)
    if family.min_image_side > smallest_side:
        pair = check_pair(settings.image, family.min_image_side)
    model = source.path_or_id
    lists = resolve_lists(settings, family, model)
    cuda = cuda_available(settings.device)

    recipe = family.recipe
    steps = settings.steps or recipe.steps
    rank = settings.rank or recipe.rank
    cfg_dir = settings.config_dir
    memory = plan_training(
        lambda: model_sizes(model, family),
        family=family.name,
        resolution=settings.resolution,
        rank=rank,
        cuda=cuda,
        quantize=settings.quantize,
        gradient_checkpointing=settings.gradient_checkpointing,
        gpu_memory=settings.gpu_memory,
    )

    def dataloader(cache: str) -> DataloaderConfig:
        return DataloaderConfig(
            image=ImageDataset(
                instance_data_dir="dataset",
                resolution=settings.resolution,
                cache_dir_vae=f"{cache}/vae",
            ),
            text_embeds=TextEmbedsDataset(cache_dir=f"{cache}/text"),
        )

    shared = (cfg_dir / "multidatabackend.json", dataloader("cache"))
    dataloaders: dict[PhaseName, tuple[Path, DataloaderConfig]] = {"slow": shared, "fast": shared}
    if settings.separate_caches:
        dataloaders["fast"] = (cfg_dir / "multidatabackend-fast.json", dataloader("cache/fast"))

    configs = {
        phase: TrainingConfig(
            model_family=family.name,
            pretrained_model_name_or_path=model,
            data_backend_config=run_relative(dataloaders[phase][0], settings.output_dir),
            output_dir=f"glance-{phase}",
            resolution=settings.resolution,
            max_train_steps=steps,
            learning_rate=settings.learning_rate or recipe.learning_rate,
            lr_warmup_steps=min(recipe.warmup_steps, steps // 2),
            lora_rank=rank,
            lora_alpha=recipe.alpha_per_rank * rank,
            flow_custom_timesteps=to_simpletuner(getattr(lists, phase)),
            mixed_precision="bf16" if cuda else "no",
            optimizer="adamw_bf16" if cuda else "torch-adamw",  # CPU: plain fp32 AdamW
            seed=settings.seed,
            **memory.simpletuner_keys(),
            **family.simpletuner_extras,
            **({"flux_guidance_value": recipe.train_guidance} if recipe.train_guidance is not None else {}),
        )
        for phase in PHASES
    }
    config_paths = {phase: cfg_dir / f"glance-{phase}.json" for phase in PHASES}
    return RunPlan(settings, source, family, pair, lists, cuda, dataloaders, configs, config_paths, memory)


def write_configs(plan: RunPlan, *, force: bool = False, replaceable: frozenset[Path] = frozenset()) -> list[Path]:
    """Stage the pair and write the JSON files; returns the files written or already up to date.

    Nothing is written when any existing file differs, unless `force` is on or the file is in
    `replaceable` (absolute paths of files an earlier run wrote and nobody changed since).
    """
    check_writable_dir(plan.settings.config_dir)
    check_writable_dir(plan.output_dir)
    files = plan.files()
    to_write = {
        path: text for path, text in files.items() if needs_writing(path, text, force or path.resolve() in replaceable)
    }
    _reset_stale_caches(plan)
    stage_pair(plan.pair, plan.dataset_dir)
    for path, text in to_write.items():
        write_atomic(path, text)
    return list(files)


def _reset_stale_caches(plan: RunPlan) -> None:
    """SimpleTuner keys its caches by file name: a new image, caption, model or size must not reuse them."""
    stamp = plan.cache_dir / "glance-cache.json"
    key = dump_json(
        {
            "pair": plan.pair.fingerprint,
            "model": plan.configs["slow"].pretrained_model_name_or_path,
            "resolution": plan.settings.resolution,
        }
    )
    if stamp.is_file() and stamp.read_text() == key:
        return
    if plan.cache_dir.exists():
        shutil.rmtree(plan.cache_dir)
    write_atomic(stamp, key)


def simpletuner_command_lines(plan: RunPlan) -> list[str]:
    """The plain shell lines that run each phase by hand, as `glance train` runs them."""
    import shlex

    env = {"CONFIG_BACKEND": "json", "MIXED_PRECISION": plan.configs["slow"].mixed_precision}
    if not plan.cuda:
        env["PYTHONPATH"] = str(CPU_SHIM_DIR)  # the pin_memory shim, see glance/simpletuner.py
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    run_dir = shlex.quote(str(plan.output_dir))
    return [
        f"(cd {run_dir} && {prefix} simpletuner train --env "
        f"{shlex.quote(run_relative(plan.config_paths[p], plan.output_dir))})"
        for p in PHASES
    ]


# --- running the phases ---------------------------------------------------------------------


class TrainingInterrupted(Exception):
    """Ctrl-C during a phase: the child processes were stopped, the phase is not done."""


@dataclass
class PhaseLaunch:
    """One phase's child process, exactly as it will be started."""

    phase: PhaseName
    command: list[str]
    env: dict[str, str]
    cwd: Path  # the run folder

    def env_changes(self, base: dict[str, str] | None = None) -> dict[str, str | None]:
        """The variables glance sets (value) or removes (None) relative to `base`."""
        base = dict(os.environ if base is None else base)
        changes: dict[str, str | None] = {k: v for k, v in self.env.items() if base.get(k) != v}
        changes.update({k: None for k in base if k not in self.env})
        return changes


def phase_launches(plan: RunPlan, *, parallel: bool = False, num_processes: int = 1) -> list[PhaseLaunch]:
    if (parallel or num_processes > 1) and not plan.cuda:
        raise GlanceError("--parallel and --num-processes need CUDA GPUs (pass --device cuda on a GPU machine)")
    if num_processes < 1:
        raise GlanceError("--num-processes must be at least 1")
    simpletuner = find_simpletuner()
    accelerate = accelerate_config_path(plan, num_processes)
    launches = []
    for index, phase in enumerate(PHASES):
        gpus = None
        if parallel:  # disjoint GPU sets: slow on the first num_processes GPUs, fast on the next
            gpus = ",".join(str(g) for g in range(index * num_processes, (index + 1) * num_processes))
        env = phase_env(simpletuner, cuda=plan.cuda, gpus=gpus, accelerate_config=accelerate)
        command = phase_command(simpletuner, plan.config_paths[phase])
        launches.append(PhaseLaunch(phase, command, env, plan.output_dir))
    return launches


def accelerate_config_path(plan: RunPlan, num_processes: int) -> Path | None:
    if num_processes == 1:
        return None
    return plan.settings.config_dir / f"accelerate-{num_processes}.yaml"


class PhaseRun:
    """A running phase: the child, a thread copying its output to the log and the reporter."""

    def __init__(self, launch: PhaseLaunch, log_path: Path, total_steps: int, reporter: Reporter):
        self.launch = launch
        self.log_path = log_path
        self.progress = PhaseProgress(launch.phase, total_steps)
        self.reporter = reporter
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "w", encoding="utf-8", errors="replace")  # noqa: SIM115 - closed in wait()
        try:
            # Own session: Ctrl-C reaches glance only, which then stops the whole process group.
            self.process = subprocess.Popen(
                launch.command,
                env=launch.env,
                cwd=launch.cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            self._log.close()
            raise GlanceError(f"cannot start {launch.command[0]}: {exc.strerror or exc}") from None
        self.started = time.monotonic()
        self._reader = threading.Thread(target=self._copy_output, daemon=True)
        self._reader.start()

    def _copy_output(self) -> None:
        buffer = b""
        for chunk in iter(lambda: self.process.stdout.read1(65536), b""):
            buffer += chunk
            *lines, buffer = re.split(rb"[\r\n]", buffer)
            for raw in lines:
                self._line(raw.decode("utf-8", errors="replace"))
        if buffer:
            self._line(buffer.decode("utf-8", errors="replace"))

    def _line(self, line: str) -> None:
        if not line.strip():
            return
        self._log.write(line + "\n")
        self.reporter.raw(self.launch.phase, line)
        # Before the step bar appears, every log line refreshes the live line's clock.
        if self.progress.update(line) or not self.progress.started_steps:
            self.reporter.progress(self.progress)

    def poll(self) -> int | None:
        return self.process.poll()

    def stop(self) -> None:
        """SIGTERM to the whole process group (accelerate and its workers), SIGKILL after 10 s."""
        if self.process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def wait(self) -> int:
        code = self.process.wait()
        self._reader.join(timeout=10)
        self._log.close()
        return code

    @property
    def duration(self) -> float:
        return time.monotonic() - self.started


def _phase_result(run: PhaseRun, code: int, lora_dir: Path, memory: TrainingPlan) -> None:
    """Raise unless the phase exited 0 AND left its weights (Ctrl-C inside SimpleTuner exits 0).

    The log is read once: its last exception is the cause shown, and a CUDA out-of-memory error in
    it adds the next lighter plan to the error line.
    """
    if code == 0 and (lora_dir / WEIGHTS_NAME).is_file():
        return
    phase = run.launch.phase
    lines = _log_tail(run.log_path)
    if code != 0:
        print(f"{phase}: {failure_cause(lines) or 'no exception in its output'}", file=sys.stderr)
        failure = f"the {phase} phase failed (exit code {code}); full log: {run.log_path}"
    else:
        failure = f"the {phase} phase exited 0 but wrote no {lora_dir / WEIGHTS_NAME}; full log: {run.log_path}"
    advice = oom_advice("\n".join(lines), memory)
    raise GlanceError(f"{failure}; {advice}" if advice is not None else failure)


def _log_tail(path: Path, limit: int = 1 << 20) -> list[str]:
    """The last `limit` bytes of a phase log, as lines (a verbose log can be large)."""
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - limit))
        return handle.read().decode("utf-8", errors="replace").splitlines()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _unchanged_since(manifest: RunManifest | None) -> frozenset[Path]:
    """The config files `manifest`'s run wrote that still hold exactly what it wrote."""
    if manifest is None:
        return frozenset()
    return frozenset(
        Path(path)
        for path, digest in manifest.written_configs.items()
        if Path(path).is_file() and _sha256(Path(path).read_bytes()) == digest
    )


def _fresh_manifest(plan: RunPlan, previous: RunManifest | None) -> RunManifest:
    s, cfg = plan.settings, plan.configs["slow"]
    manifest = RunManifest(
        glance_version=__version__,
        model=plan.source.model,
        model_revision=plan.source.revision,
        model_path=str(plan.source.folder) if plan.source.folder is not None else None,
        family=plan.family.name,
        resolution=s.resolution,
        slow_timesteps=list(plan.lists.slow),
        fast_timesteps=list(plan.lists.fast),
        train_guidance=cfg.flux_guidance_value,
        seed=s.seed,
        steps=cfg.max_train_steps,
        rank=cfg.lora_rank,
        learning_rate=cfg.learning_rate,
        quantize=plan.memory.quantize,
        gradient_checkpointing=plan.memory.gradient_checkpointing,
        memory_plan=plan.memory.describe(),
        versions=package_versions(),
    )
    if previous is not None:  # a finished phase stays finished only while its inputs are the same
        manifest.phases = {
            phase: record
            for phase, record in previous.phases.items()
            if record.inputs_sha256 == plan.inputs_sha256(phase)
        }
    return manifest


def phases_to_run(plan: RunPlan, manifest: RunManifest, *, force: bool, only: PhaseName | None) -> list[PhaseName]:
    """The phases not finished for these inputs, or whose weights are gone (all of them with `force`)."""
    todo = []
    for phase in PHASES if only is None else (only,):
        done = phase in manifest.phases and (plan.lora_dir(phase) / WEIGHTS_NAME).is_file()
        if force or not done:
            todo.append(phase)
    return todo


def train(
    plan: RunPlan,
    *,
    force: bool = False,
    only: PhaseName | None = None,
    parallel: bool = False,
    num_processes: int = 1,
    reporter: Reporter | None = None,
) -> RunManifest:
    """Run the phases that need it and return the manifest (also saved to plan.manifest_path).

    Holds the run folder's lock throughout: a second run on the same folder stops at once.
    """
    if plan.source.folder is None:
        raise GlanceError(f"{plan.source.model} is not downloaded yet; plan the run with fetch=True")
    reporter = reporter or Reporter()
    launches = {launch.phase: launch for launch in phase_launches(plan, parallel=parallel, num_processes=num_processes)}
    check_writable_dir(plan.output_dir)
    with RunLock(plan.output_dir):
        return _train_locked(
            plan, launches, force=force, only=only, parallel=parallel, reporter=reporter, num_processes=num_processes
        )


def _train_locked(
    plan: RunPlan,
    launches: dict[PhaseName, PhaseLaunch],
    *,
    force: bool,
    only: PhaseName | None,
    parallel: bool,
    num_processes: int,
    reporter: Reporter,
) -> RunManifest:
    previous = load_manifest(plan.manifest_path) if plan.manifest_path.is_file() else None
    written = write_configs(plan, force=force, replaceable=_unchanged_since(previous))
    accelerate = accelerate_config_path(plan, num_processes)
    if accelerate is not None:
        write_atomic(accelerate, accelerate_config_yaml(num_processes, plan.configs["slow"].mixed_precision))

    reporter.message(plan.memory.describe())
    manifest = _fresh_manifest(plan, previous)
    manifest.written_configs = {str(path.resolve()): _sha256(path.read_bytes()) for path in written}
    todo = phases_to_run(plan, manifest, force=force, only=only)
    for phase in PHASES:
        if phase not in todo and (only is None or only == phase):
            reporter.message(f"{phase}: up to date ({plan.lora_dir(phase) / WEIGHTS_NAME}); --force retrains")
    for phase in todo:
        # A fresh start: no stale checkpoint may be resumed ("latest" is SimpleTuner's default).
        manifest.phases.pop(phase, None)
        if plan.lora_dir(phase).exists():
            shutil.rmtree(plan.lora_dir(phase))
    manifest.save(plan.manifest_path)

    batches = [todo] if parallel else [[phase] for phase in todo]
    for batch in batches:
        runs: dict[PhaseName, PhaseRun] = {}
        try:
            for phase in batch:
                reporter.message(
                    f"{phase}: training {plan.configs[phase].max_train_steps} steps on "
                    f"{plan.configs[phase].flow_custom_timesteps} (log: {plan.log_path(phase)})"
                )
                runs[phase] = PhaseRun(
                    launches[phase], plan.log_path(phase), plan.configs[phase].max_train_steps, reporter
                )
            _wait_all(runs, plan, manifest, reporter)
        except KeyboardInterrupt:
            for run in runs.values():
                run.stop()
            for run in runs.values():
                run.wait()
            raise TrainingInterrupted(
                f"interrupted: {', '.join(runs)} phase not done; the manifest lists only finished phases"
            ) from None
    return manifest


def _wait_all(runs: dict[PhaseName, PhaseRun], plan: RunPlan, manifest: RunManifest, reporter: Reporter) -> None:
    """Wait for every run; record each success at once; on a failure stop the others and raise."""
    pending = dict(runs)
    while pending:
        for phase, run in list(pending.items()):
            if run.poll() is None:
                continue
            del pending[phase]
            code = run.wait()
            try:
                _phase_result(run, code, plan.lora_dir(phase), plan.memory)
            except GlanceError:
                for other in pending.values():
                    other.stop()
                    other.wait()
                raise
            config = plan.configs[phase]
            add_adapter_metadata(plan.lora_dir(phase) / WEIGHTS_NAME, rank=config.lora_rank, alpha=config.lora_alpha)
            manifest.phases[phase] = PhaseRecord(
                lora_dir=os.path.relpath(plan.lora_dir(phase), plan.output_dir),
                inputs_sha256=plan.inputs_sha256(phase),
                duration_s=round(run.duration, 2),
                finished_at=datetime.now(UTC),
            )
            manifest.save(plan.manifest_path)
            reporter.message(f"{phase}: done in {run.duration:.0f} s -> {plan.lora_dir(phase) / WEIGHTS_NAME}")
        time.sleep(0.05)  # a finished phase is noticed within 50 ms


def describe_source(source: ModelSource) -> str:
    """One line on where the model comes from: its folder, or what is still to come."""
    if source.folder is None:
        return source.note or f"{source.model} (not downloaded yet)"
    if source.on_hub:
        return f"{source.model} at {source.revision} (cached: {source.folder})"
    return str(source.folder)


def describe_launches(plan: RunPlan, launches: list[PhaseLaunch], emit: Callable[[str], None] = print) -> None:
    """The --dry-run report: files, then each phase's exact command and environment changes."""
    import shlex

    emit(f"model: {describe_source(plan.source)}")
    emit(plan.memory.describe())
    emit("config files:")
    for path in plan.files():
        emit(f"  {path}")
    for launch in launches:
        emit(f"{launch.phase} phase:")
        emit(f"  in: {launch.cwd}")
        emit(f"  command: {shlex.join(launch.command)}")
        for name, value in sorted(launch.env_changes().items()):
            emit(f"  env: {name}={shlex.quote(value)}" if value is not None else f"  env: unset {name}")
