"""The manifest's bookkeeping for a run: what it records, and what it says is still to do.

A finished phase stays finished only while its inputs are the same; a config file the last run
wrote stays glance's to replace only while nobody has changed it since.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from glance import __version__
from glance.families import GlanceError
from glance.files import file_sha256
from glance.manifest import PHASES, WEIGHTS_NAME, PhaseName, PhaseRecord, RunManifest, load_manifest, package_versions
from glance.run_plan import RunPlan, write_configs


def unchanged_since(manifest: RunManifest | None) -> frozenset[Path]:
    """The config files `manifest`'s run wrote that still hold exactly what it wrote."""
    if manifest is None:
        return frozenset()
    return frozenset(
        Path(path)
        for path, digest in manifest.written_configs.items()
        if Path(path).is_file() and file_sha256(Path(path)) == digest
    )


def written_configs(paths: list[Path]) -> dict[str, str]:
    """What the manifest records of the config files a run wrote: absolute path -> sha256."""
    return {str(path.resolve()): file_sha256(path) for path in paths}


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


def write_run_files(plan: RunPlan, *, force: bool, keep_finished: bool = False) -> RunManifest:
    """Stage the pair, write the configs and save the manifest that describes the folder now.

    The configs glance wrote itself (recorded in the manifest) are replaced when an option changes,
    as `glance train` and `glance configs` both do; a file edited since needs `force`. With
    `keep_finished` (`glance configs`, which trains nothing) a finished phase whose inputs the new
    files would change is refused unless `force`: its LoRA would stay on record next to a dataset
    and configs it was not trained on, and export and push would describe the wrong pair.
    """
    previous = _previous_manifest(plan)
    if keep_finished and previous is not None and not force:
        stale = [p for p, record in previous.phases.items() if record.inputs_sha256 != plan.inputs_sha256(p)]
        if stale:
            raise GlanceError(
                f"{plan.output_dir} holds a finished run ({' and '.join(stale)} phase) trained on other inputs; "
                "these configs would replace its dataset and configs: pass another --output-dir, "
                "or --force to replace the run"
            )
    written = write_configs(plan, force=force, replaceable=unchanged_since(previous))
    manifest = fresh_manifest(plan, previous)  # a finished phase stays only while its inputs are unchanged
    manifest.written_configs = written_configs(written)
    manifest.save(plan.manifest_path)
    return manifest


def _previous_manifest(plan: RunPlan) -> RunManifest | None:
    return load_manifest(plan.manifest_path) if plan.manifest_path.is_file() else None
