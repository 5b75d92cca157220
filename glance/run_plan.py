"""The run plan: the user's settings turned into everything a run needs, and the files it writes.

`plan_run` turns the user's settings into a `RunPlan` (checks only, nothing written);
`write_configs` stages the pair and writes the four JSON files. Running the phases is
glance/train.py's.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from glance.families import DEFAULT_MODEL, FAMILIES, Family, GlanceError, model_schedule, resolve_family
from glance.files import check_writable_dir, folder_fingerprint, needs_writing, write_atomic
from glance.hub import ModelSource, resolve_model
from glance.manifest import MANIFEST_NAME, PHASES, PhaseName
from glance.memory.gpu import detect_gpu_ids
from glance.memory.plans import QuantizeChoice, TrainingPlan, plan_training
from glance.memory.sizes import model_sizes
from glance.pair import DEFAULT_BACKGROUND, DEFAULT_IMAGE, ImagePair, caption_length_note, check_pair, stage_pair
from glance.phase_mode import PhaseMode, PhasesChoice, choose_mode, ram_fits_twice
from glance.schedule import TimestepLists, default_lists, parse_lists, to_simpletuner
from glance.simpletuner import (
    CPU_SHIM_DIR,
    DataloaderConfig,
    ImageDataset,
    TextEmbedsDataset,
    TrainingConfig,
    dump_json,
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
    phases: PhasesChoice = "auto"  # both phases at once or one after the other (glance/phase_mode.py)
    num_processes: int = Field(1, ge=1)  # GPUs (accelerate processes) per phase
    quantize: QuantizeChoice = "auto"  # the memory plan (glance/memory/)
    gradient_checkpointing: bool | None = None  # None: as the plan says
    gpu_memory: float | None = Field(None, gt=0)  # GiB of the card to plan for; None: nvidia-smi's
    background: str = DEFAULT_BACKGROUND  # what a transparent image's clear pixels are trained on


def cuda_available(device: Device) -> bool:
    if device != "auto":
        return device == "cuda"
    import torch

    return torch.cuda.is_available()


@dataclass
class RunPlan:
    """Everything about a run that can be known before anything is written.

    Each phase's SimpleTuner runs in its own working folder inside the run folder
    (OUTPUT_DIR/simpletuner-PHASE), so the paths in its configs are relative to that: it writes
    `debug.log` into its working folder (truncating any that is there) and reads
    `config/config.env` from it, neither of which may touch the user's own folder or the other
    phase. Each phase also has its own dataloader file, dataset ids (SimpleTuner names its
    aspect-bucket files in the shared dataset folder by them) and VAE and text caches in its
    working folder: two phases at once never write one file, and a phase's configs are the same
    whichever way the phases run, so a phase done one way is up to date the other way.
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
    notes: list[str]  # what the run changes of the user's input (a flattened image, a cut caption): said once
    mode: PhaseMode
    text_encoder_parts: tuple[str, tuple[Path, ...]] | None = None  # Family.text_encoder_parts: served from HUB_CACHE

    @property
    def output_dir(self) -> Path:
        return self.settings.output_dir

    @property
    def dataset_dir(self) -> Path:
        return self.output_dir / "dataset"

    @property
    def hub_cache_dir(self) -> Path:
        """A Hub cache of this run's own, for the phases (HF_HUB_CACHE) when the text encoder is served from it."""
        return self.output_dir / "hub-cache"

    def work_dir(self, phase: PhaseName) -> Path:
        return work_dir(self.output_dir, phase)

    def cache_dir(self, phase: PhaseName) -> Path:
        return self.work_dir(phase) / "cache"

    @property
    def manifest_path(self) -> Path:
        return self.output_dir / MANIFEST_NAME

    def lora_dir(self, phase: PhaseName) -> Path:
        return lora_dir(self.output_dir, phase)

    def log_path(self, phase: PhaseName) -> Path:
        return self.output_dir / f"glance-{phase}.log"

    def files(self) -> dict[Path, str]:
        """The JSON files of this run and their text."""
        texts = {path: dump_json(loader.to_json()) for path, loader in self.dataloaders.values()}
        texts.update({self.config_paths[p]: dump_json(self.configs[p].to_json()) for p in PHASES})
        return texts

    @cached_property
    def model_fingerprint(self) -> str:
        """The model's files as they are now (a Hub model not yet downloaded: its id and revision). The
        configs name the model by its folder only, and a folder's weights can change under the same path."""
        if self.source.folder is None:
            return f"{self.source.model}@{self.source.revision}"
        return folder_fingerprint(self.source.folder)

    def inputs_sha256(self, phase: PhaseName) -> str:
        """What a phase's weights depend on: its config, its dataloader, the pair's content and the model's files."""
        _, loader = self.dataloaders[phase]
        digest = hashlib.sha256(dump_json(self.configs[phase].to_json()).encode())
        digest.update(dump_json(loader.to_json()).encode())
        digest.update(self.pair.fingerprint.encode())
        digest.update(self.model_fingerprint.encode())
        return digest.hexdigest()


def work_dir(output_dir: Path, phase: PhaseName) -> Path:
    """SimpleTuner's working folder for `phase`: its debug.log and its VAE and text caches."""
    return Path(output_dir) / f"simpletuner-{phase}"


def lora_dir(output_dir: Path, phase: PhaseName) -> Path:
    """Where `phase`'s LoRA goes (SimpleTuner's output_dir)."""
    return Path(output_dir) / f"glance-{phase}"


def resolve_lists(settings: TrainSettings, family: Family, model: str) -> TimestepLists:
    """The user's lists, or the model's own (its 50-step schedule at the training resolution)."""
    given = parse_lists(settings.slow_timesteps, settings.fast_timesteps)
    if given is not None:
        return given
    return default_lists(family, model_schedule(model, family), settings.resolution)


def run_relative(path: Path, run_dir: Path) -> str:
    """`path` as seen from `run_dir`, a phase's working folder where SimpleTuner runs (see RunPlan)."""
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
    pair = check_pair(settings.image, smallest_side, settings.background)
    if fetch and source.folder is None:
        source = resolve_model(settings.model, revision=settings.revision, fetch=True)
    family = resolve_family(source.path_or_id, settings.family)
    if family.min_image_side > smallest_side:
        pair = check_pair(settings.image, family.min_image_side, settings.background)
    model = source.path_or_id
    lists = resolve_lists(settings, family, model)
    cuda = cuda_available(settings.device)

    recipe = family.recipe
    steps = settings.steps or recipe.steps
    rank = settings.rank or recipe.rank
    cfg_dir = settings.config_dir
    if settings.num_processes > 1 and not cuda:
        raise GlanceError("--num-processes needs CUDA GPUs (pass --device cuda on a GPU machine)")

    def memory_plan(phases_per_gpu: int) -> TrainingPlan:
        return plan_training(
            lambda: model_sizes(model, family),
            family=family.name,
            resolution=settings.resolution,
            rank=rank,
            cuda=cuda,
            quantize=settings.quantize,
            gradient_checkpointing=settings.gradient_checkpointing,
            gpu_memory=settings.gpu_memory,
            phases_per_gpu=phases_per_gpu,
        )

    mode, memory = choose_mode(
        settings.phases,
        cuda=cuda,
        num_processes=settings.num_processes,
        gpu_ids=detect_gpu_ids() if cuda and settings.phases != "sequential" else None,
        memory=memory_plan(1),
        shared_memory=lambda: memory_plan(2),
        ram_fits_twice=lambda: _ram_fits_two_phases(model, family),
    )
    # Paths as SimpleTuner sees them from the phase's working folder (see RunPlan).
    work_dirs = {phase: work_dir(settings.output_dir, phase) for phase in PHASES}
    dataloaders: dict[PhaseName, tuple[Path, DataloaderConfig]] = {
        phase: (
            cfg_dir / f"multidatabackend-{phase}.json",
            DataloaderConfig(
                image=ImageDataset(
                    id=f"glance-pair-{phase}",
                    instance_data_dir=run_relative(settings.output_dir / "dataset", work_dirs[phase]),
                    resolution=settings.resolution,
                    cache_dir_vae="cache/vae",
                ),
                text_embeds=TextEmbedsDataset(id=f"glance-text-embeds-{phase}", cache_dir="cache/text"),
            ),
        )
        for phase in PHASES
    }

    configs = {
        phase: TrainingConfig(
            model_family=family.name,
            model_flavour=family.flavour_for(model),
            pretrained_model_name_or_path=model,
            data_backend_config=run_relative(dataloaders[phase][0], work_dirs[phase]),
            output_dir=run_relative(lora_dir(settings.output_dir, phase), work_dirs[phase]),
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
    notes = [note for note in (_transparency_note(pair), caption_length_note(pair.caption, source.folder)) if note]
    return RunPlan(
        settings, source, family, pair, lists, cuda, dataloaders, configs, config_paths, memory, notes, mode,
        family.text_encoder_parts(model),
    )  # fmt: skip


def _transparency_note(pair: ImagePair) -> str | None:
    if pair.background is None:
        return None
    return f"{pair.image} has transparent pixels: trained on it flattened onto {pair.background} (--background)"


def _ram_fits_two_phases(model: str, family: Family) -> bool:
    """On the CPU: two phases' fp32 weights fit this machine's memory (True when the model's size is unknown)."""
    try:
        sizes = model_sizes(model, family)
    except GlanceError:
        return True
    params = sizes.transformer_params + sum(sizes.text_encoder_params.values()) + sizes.vae_params
    return ram_fits_twice(4 * params)


def write_configs(plan: RunPlan, *, force: bool = False, replaceable: frozenset[Path] = frozenset()) -> list[Path]:
    """Stage the pair, make the phases' working folders and write the JSON files; returns the files
    written or already up to date.

    Nothing is written when any existing file differs, unless `force` is on or the file is in
    `replaceable` (absolute paths of files an earlier run wrote and nobody changed since).
    """
    check_writable_dir(plan.settings.config_dir)
    check_writable_dir(plan.output_dir)
    files = plan.files()
    to_write = {
        path: text for path, text in files.items() if needs_writing(path, text, force or path.resolve() in replaceable)
    }
    for phase in PHASES:
        _reset_stale_cache(plan, phase)
    stage_pair(plan.pair, plan.dataset_dir)
    _stage_text_encoder(plan)
    for path, text in to_write.items():
        write_atomic(path, text)
    return list(files)


HUB_CACHE_COMMIT = "0" * 40  # the one snapshot of a repo in the run's own Hub cache


def _stage_text_encoder(plan: RunPlan) -> None:
    """Serve the model's text-encoder folders as the hub repo SimpleTuner asks for, in the run's own Hub cache.

    The phases run offline with HF_HUB_CACHE there (glance/phase.py), so the repo resolves to links to the
    model's files: nothing copied, nothing downloaded, the user's own cache untouched.
    """
    if plan.text_encoder_parts is None:
        return
    repo, parts = plan.text_encoder_parts
    for part in parts:
        if not part.is_dir():
            raise GlanceError(f"{part} is missing: the model folder has no {part.name}/ for SimpleTuner's text encoder")
    repo_dir = plan.hub_cache_dir / f"models--{repo.replace('/', '--')}"
    if repo_dir.exists():
        shutil.rmtree(repo_dir)
    snapshot = repo_dir / "snapshots" / HUB_CACHE_COMMIT
    snapshot.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(HUB_CACHE_COMMIT)
    for part in parts:
        for file in sorted(part.iterdir()):
            link = snapshot / file.name
            if link.exists():
                names = ", ".join(p.name for p in parts)
                raise GlanceError(f"{file.name} is in more than one of {names}: cannot serve them as {repo}")
            link.symlink_to(file.resolve())


def _reset_stale_cache(plan: RunPlan, phase: PhaseName) -> None:
    """SimpleTuner keys its caches by file name: a new image, caption, model or size must not reuse them."""
    cache_dir = plan.cache_dir(phase)
    stamp = cache_dir / "glance-cache.json"
    key = dump_json(
        {
            "pair": plan.pair.fingerprint,
            "model": plan.configs["slow"].pretrained_model_name_or_path,
            "model_files": plan.model_fingerprint,
            "resolution": plan.settings.resolution,
        }
    )
    if stamp.is_file() and stamp.read_text() == key:
        return
    if cache_dir.exists():
        shutil.rmtree(cache_dir)
    write_atomic(stamp, key)  # (and so the working folder exists for the commands printed)


def simpletuner_command_lines(plan: RunPlan) -> list[str]:
    """The plain shell lines that run each phase by hand, as `glance train` runs them."""
    import shlex

    from glance.families import GlanceError
    from glance.simpletuner import find_simpletuner

    try:  # by its full path, with its folder first on PATH (it starts `accelerate` by name): no venv to activate
        simpletuner = find_simpletuner()
    except GlanceError:
        simpletuner = None
    env = {"CONFIG_BACKEND": "json", "MIXED_PRECISION": plan.configs["slow"].mixed_precision}
    if not plan.cuda:
        env["PYTHONPATH"] = str(CPU_SHIM_DIR)  # the pin_memory shim, see glance/simpletuner.py
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    if simpletuner is not None:
        prefix = f'PATH={shlex.quote(str(simpletuner.parent))}:"$PATH" {prefix}'
    program = shlex.quote(str(simpletuner)) if simpletuner is not None else "simpletuner"
    return [
        f"(cd {shlex.quote(str(plan.work_dir(p)))} && {prefix} {program} train --env "
        f"{shlex.quote(run_relative(plan.config_paths[p], plan.work_dir(p)))})"
        for p in PHASES
    ]


def describe_source(source: ModelSource) -> str:
    """One line on where the model comes from: its folder, or what is still to come."""
    if source.folder is None:
        return source.note or f"{source.model} (not downloaded yet)"
    if source.on_hub:
        return f"{source.model} at {source.revision} (cached: {source.folder})"
    return str(source.folder)
