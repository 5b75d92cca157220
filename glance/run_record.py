"""The manifest's bookkeeping for a run: what it records, and what it says is still to do.

A finished phase stays finished only while its inputs are the same; a config file the last run
wrote stays glance's to replace only while nobody has changed it since.
"""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

from glance import __version__
from glance.manifest import PHASES, WEIGHTS_NAME, PhaseName, PhaseRecord, RunManifest, package_versions
from glance.run_plan import RunPlan


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def unchanged_since(manifest: RunManifest | None) -> frozenset[Path]:
    """The config files `manifest`'s run wrote that still hold exactly what it wrote."""
    if manifest is None:
        return frozenset()
    return frozenset(
        Path(path)
        for path, digest in manifest.written_configs.items()
        if Path(path).is_file() and _sha256(Path(path).read_bytes()) == digest
    )


def written_configs(paths: list[Path]) -> dict[str, str]:
    """What the manifest records of the config files a run wrote: absolute path -> sha256."""
    return {str(path.resolve()): _sha256(path.read_bytes()) for path in paths}


def fresh_manifest(plan: RunPlan, previous: RunManifest | None) -> RunManifest:
    """The manifest of `plan` before any phase runs, keeping the phases `previous` finished on the same inputs."""
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


def phase_record(plan: RunPlan, phase: PhaseName, duration_s: float) -> PhaseRecord:
    """The manifest's record of a phase that has just finished."""
    return PhaseRecord(
        lora_dir=os.path.relpath(plan.lora_dir(phase), plan.output_dir),
        inputs_sha256=plan.inputs_sha256(phase),
        duration_s=round(duration_s, 2),
        finished_at=datetime.now(UTC),
    )
