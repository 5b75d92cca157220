"""`glance train`: run both SimpleTuner phases of a planned run, and keep its manifest up to date.

The run is planned first (glance/run_plan.py: `plan_run`, `write_configs`); `train` holds the run
folder's lock, writes the configs, runs the phases that are not already done (glance/phase.py) and
records each one in the manifest as it finishes (glance/run_record.py).
"""

from __future__ import annotations

import shutil
import time

from glance.families import GlanceError
from glance.files import check_writable_dir, write_atomic
from glance.lock import RunLock
from glance.manifest import PHASES, WEIGHTS_NAME, PhaseName, RunManifest
from glance.phase import PhaseLaunch, PhaseRun, accelerate_config_path, check_phase_result, phase_launches
from glance.progress import Reporter
from glance.run_plan import RunPlan
from glance.run_record import phase_record, phases_to_run, write_run_files
from glance.simpletuner import accelerate_config_yaml, add_adapter_metadata


class TrainingInterrupted(Exception):
    """Ctrl-C during a phase: the child processes were stopped, the phase is not done."""


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
    manifest = write_run_files(plan, force=force)
    accelerate = accelerate_config_path(plan, num_processes)
    if accelerate is not None:
        write_atomic(accelerate, accelerate_config_yaml(num_processes, plan.configs["slow"].mixed_precision))

    reporter.message(plan.memory.describe())
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
                check_phase_result(run, code, plan.lora_dir(phase), plan.memory)
            except GlanceError:
                for other in pending.values():
                    other.stop()
                    other.wait()
                raise
            config = plan.configs[phase]
            add_adapter_metadata(plan.lora_dir(phase) / WEIGHTS_NAME, rank=config.lora_rank, alpha=config.lora_alpha)
            manifest.phases[phase] = phase_record(plan, phase, run.duration)
            manifest.save(plan.manifest_path)
            reporter.message(f"{phase}: done in {run.duration:.0f} s -> {plan.lora_dir(phase) / WEIGHTS_NAME}")
        time.sleep(0.05)  # a finished phase is noticed within 50 ms
