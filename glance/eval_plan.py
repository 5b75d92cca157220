"""What one `glance eval` renders: its columns, every image of each, and the render cache's keys.

The columns: `base-50` (the reference: the base model at its own 50-step schedule; --reference N),
`base-10` (the base at its own schedule with as many steps as the pair), `schedule-10` (the base on
the pair's trained sigmas, no LoRA) and `glance-10` (the pair as `glance infer` samples it), one per
run with several runs, named after the run folders.

Every image is cached on disk, keyed by everything that makes it: the model's files, prompt, seed,
size, steps or sigmas, guidance, dtype and device kind, and for a pair its LoRA files and strength.
A second pair on the same model renders only its own column; more prompts or seeds only the new
images. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from glance.families import GlanceError
from glance.manifest import RunManifest, load_finished_run

ColumnKind = Literal["base", "schedule", "glance"]
DEFAULT_REFERENCE = 50
CACHE_ENV = "GLANCE_EVAL_CACHE"


def default_cache() -> Path:
    """Where reference renders are kept: $GLANCE_EVAL_CACHE, else ~/.cache/glance/eval."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "glance" / "eval"


class EvalOptions(BaseModel):
    """Everything one `glance eval` needs (the command's options, checked)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    runs: list[Path] = Field(min_length=1)
    prompts: list[str] | None = None  # None: the default set (the shapes model: held-out and open captions)
    seeds: list[int] = Field([0, 1], min_length=1)
    reference: int = Field(DEFAULT_REFERENCE, ge=1)
    scorers: list[str] | None = None  # None: judge on the shapes model, else clip and dino
    scorer_models: dict[str, str] = {}  # scorer -> local folder or Hub id
    out: Path | None = None  # None: <first run>/eval
    cache: Path | None = None  # None: default_cache()
    device: Literal["auto", "cuda", "mps", "cpu"] = "auto"
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    num_processes: int = Field(1, ge=1)
    lora_scale: float = Field(1.0, ge=0)  # < 1 weakens the pairs (a deliberately broken column, in tests)
    sheet_rows: int = Field(24, ge=1)
    force: bool = False


class EvalColumn(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    kind: ColumnKind
    steps: int
    sigmas: list[float] | None = None  # schedule and glance columns: exactly these
    run: Path | None = None  # glance: the run folder
    pair: str | None = None  # schedule and glance: the glance column whose sigmas / LoRAs these are

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() or c in "-." else "-" for c in self.name).strip("-")


class EvalTask(BaseModel):
    """One image: `index` in prompt-major order, written to `out` (a copy of the cached image at `cache`)."""

    model_config = ConfigDict(frozen=True)

    column: str
    kind: ColumnKind
    index: int
    prompt: str
    seed: int
    steps: int
    sigmas: list[float] | None = None
    run: Path | None = None
    out: Path
    cache: Path | None = None


def load_runs(runs: list[Path]) -> list[RunManifest]:
    """Each run's manifest; one line for a folder that is not a finished run, or runs on other base models."""
    manifests = []
    for run in runs:
        try:
            manifests.append(load_finished_run(run))
        except GlanceError as exc:
            raise GlanceError(f"-o {run} is not a finished glance run: {exc}") from None
    first = manifests[0]
    for run, manifest in zip(runs[1:], manifests[1:], strict=True):
        if (manifest.model, manifest.model_revision) != (first.model, first.model_revision):
            raise GlanceError(
                f"the runs were trained on different base models: {first.model} ({runs[0]}) and "
                f"{manifest.model} ({run}); evaluate each model on its own"
            )
        if manifest.resolution != first.resolution:
            raise GlanceError(f"the runs were trained at different resolutions ({runs[0]}, {run})")
    return manifests


def plan_columns(runs: list[Path], manifests: list[RunManifest], reference: int, lora_scale: float) -> list[EvalColumn]:
    """base-REF, base-N per step count, schedule-N per distinct sigma list, glance-N per run, in that order."""
    names = _run_names(runs)
    scale = f" x{lora_scale:g}" if lora_scale != 1.0 else ""
    glance = [
        EvalColumn(
            name=f"glance-{len(m.lists.sigmas)}" + (f" {names[i]}" if len(runs) > 1 else "") + scale,
            kind="glance", steps=len(m.lists.sigmas), sigmas=list(m.lists.sigmas), run=Path(runs[i]).resolve(),
        )
        for i, m in enumerate(manifests)
    ]  # fmt: skip
    columns = [EvalColumn(name=f"base-{reference}", kind="base", steps=reference)]
    for steps in dict.fromkeys(c.steps for c in glance):
        if steps != reference:
            columns.append(EvalColumn(name=f"base-{steps}", kind="base", steps=steps))
    lists = list(dict.fromkeys(tuple(c.sigmas) for c in glance))
    for sigmas in lists:
        owner = next(c for c in glance if tuple(c.sigmas) == sigmas)
        suffix = f" {names[glance.index(owner)]}" if len(lists) > 1 else ""
        columns.append(EvalColumn(name=f"schedule-{len(sigmas)}{suffix}", kind="schedule", steps=len(sigmas),
                                  sigmas=list(sigmas), pair=owner.name))  # fmt: skip
    return columns + glance


def plan_tasks(columns: list[EvalColumn], prompts: list[str], seeds: list[int], out: Path) -> list[EvalTask]:
    pairs = [(prompt, seed) for prompt in prompts for seed in seeds]
    width = max(3, len(str(len(pairs))))
    return [
        EvalTask(column=c.name, kind=c.kind, index=i, prompt=p, seed=s, steps=c.steps, sigmas=c.sigmas, run=c.run,
                 out=out / c.slug / f"{i + 1:0{width}d}.png")  # fmt: skip
        for c in columns
        for i, (p, s) in enumerate(pairs)
    ]


def cache_key(task: EvalTask, identity: dict) -> str:
    """What makes a base or schedule image: the model (`identity`: files, size, guidance, dtype, device), the task."""
    what = {**identity, "prompt": task.prompt, "seed": task.seed, "steps": task.steps, "sigmas": task.sigmas}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def with_cache(tasks: list[EvalTask], cache: Path, identity: dict, pairs: dict[str, dict]) -> list[EvalTask]:
    """Every task with its cache path (cache/ab/abcdef....png); a glance task's key holds its pair
    (`pairs`: run folder -> the LoRA files' fingerprint, strength and guidance), so adding prompts or
    seeds to an eval renders only the new images."""
    out = []
    for task in tasks:
        pair = pairs[str(task.run)] if task.kind == "glance" else {}
        key = cache_key(task, {**identity, **pair})
        out.append(task.model_copy(update={"cache": Path(cache) / key[:2] / f"{key}.png"}))
    return out


def _run_names(runs: list[Path]) -> list[str]:
    """Each run's folder name, or parent/name where two share a name."""
    names = [Path(r).resolve().name for r in runs]
    if len(set(names)) < len(names):
        names = [f"{Path(r).resolve().parent.name}/{Path(r).resolve().name}" for r in runs]
    if len(set(names)) < len(names):
        raise GlanceError("the same run is given twice")
    return names
