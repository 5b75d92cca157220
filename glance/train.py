"""`glance train`: run both SimpleTuner phases of a planned run, and keep its manifest up to date.

The run is planned first (glance/run_plan.py: `plan_run`, `write_configs`); `train` holds the run
folder's lock, writes the configs, runs the phases that are not already done (glance/phase.py) —
both at once or one after the other, as the plan's mode says (glance/phase_mode.py) — and records
each one in the manifest as it finishes (glance/run_record.py). When one of two phases at once
fails, the other is stopped; Ctrl-C stops both.
"""

from __future__ import annotations

import shutil
import signal
import threading
import time
from contextlib import contextmanager

from glance.families import GlanceError
from glance.files import check_writable_dir, write_atomic
from glance.lock import RunLock
from glance.manifest import PHASES, WEIGHTS_NAME, PhaseName, RunManifest
from glance.phase import (
    PhaseLaunch,
    PhaseRun,
    accelerate_config_path,
    check_phase_result,
    phase_failed,
    phase_launches,
    stop_runs,
)
from glance.progress import Reporter
from glance.run_plan import RunPlan
from glance.run_record import phase_record, phases_to_run, write_run_files
from glance.simpletuner import ACCELERATE_PORT, accelerate_config_yaml, add_adapter_metadata


class TrainingInterrupted(Exception):
    """Ctrl-C during a phase: the child processes were stopped, the phase is not done."""


def train(
    plan: RunPlan,
    *,
    force: bool = False,
    only: PhaseName | None = None,
    reporter: Reporter | None = None,
) -> RunManifest:
    """Run the phases that need it and return the manifest (also saved to plan.manifest_path).

    Holds the run folder's lock throughout (both phases, when they run at once): a second run on the
    same folder stops at once.
    """
    if plan.source.folder is None:
        raise GlanceError(f"{plan.source.model} is not downloaded yet; plan the run with fetch=True")
    reporter = reporter or Reporter()
    launches = {launch.phase: launch for launch in phase_launches(plan)}
    check_writable_dir(plan.output_dir)
    with RunLock(plan.output_dir):
        return _train_locked(plan, launches, force=force, only=only, reporter=reporter)


def _train_locked(
    plan: RunPlan,
    launches: dict[PhaseName, PhaseLaunch],
    *,
    force: bool,
    only: PhaseName | None,
    reporter: Reporter,
) -> RunManifest:
    manifest = write_run_files(plan, force=force)
    for port, phase in enumerate(PHASES, start=ACCELERATE_PORT):
        accelerate = accelerate_config_path(plan, phase)
        if accelerate is not None:
            n, precision = plan.settings.num_processes, plan.configs[phase].mixed_precision
            write_atomic(accelerate, accelerate_config_yaml(n, precision, port=port))

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

    if len(todo) == 2:
        reporter.message(plan.mode.describe())
    batches = [todo] if plan.mode.parallel else [[phase] for phase in todo]
    with _terminate_as_interrupt():
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
                _stop_all(runs.values())
                unfinished = [phase for phase in runs if phase not in manifest.phases]
                raise TrainingInterrupted(
                    f"interrupted: {' and '.join(unfinished) or 'no'} phase not done; "
                    "the manifest lists only finished phases"
                ) from None
            finally:
                reporter.done()
    return manifest


@contextmanager
def _terminate_as_interrupt():
    """SIGTERM (`kill`) stops the phases as Ctrl-C does: no SimpleTuner is left training without glance."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop_all(runs) -> None:
    """Stop every phase still running, all at once, and close their logs."""
    runs = list(runs)
    stop_runs(runs)
    for run in runs:
        run.wait()


def _wait_all(runs: dict[PhaseName, PhaseRun], plan: RunPlan, manifest: RunManifest, reporter: Reporter) -> None:
    """Wait for every run and record each success at once. The first failure stops the runs still
    going; the error names it, its cause and the phases it stopped."""
    pending = dict(runs)
    failure: tuple[PhaseRun, int, list[str]] | None = None
    while pending:
        for phase, run in list(pending.items()):
            if run.poll() is None:
                continue
            del pending[phase]
            code = run.wait()
            reporter.end(run.progress)
            if phase_failed(code, plan.lora_dir(phase)):
                if failure is None:
                    failure = (run, code, [other for other, still in pending.items() if still.poll() is None])
                    stop_runs(list(pending.values()))
                continue
            config = plan.configs[phase]
            add_adapter_metadata(plan.lora_dir(phase) / WEIGHTS_NAME, rank=config.lora_rank, alpha=config.lora_alpha)
            manifest.phases[phase] = phase_record(plan, phase, run.duration)
            manifest.save(plan.manifest_path)
            reporter.message(f"{phase}: done in {run.duration:.0f} s -> {plan.lora_dir(phase) / WEIGHTS_NAME}")
        time.sleep(0.05)  # a finished phase is noticed within 50 ms
    if failure is not None:
        run, code, stopped = failure
        reporter.done()  # the cause and the error line follow, on stderr
        check_phase_result(run, code, plan.lora_dir(run.launch.phase), plan.memory, stopped=stopped)
