"""The phase boundary: one SimpleTuner phase's child process, started, watched, stopped, judged.

`phase_launches` says exactly what each phase runs (command, environment, folder); `PhaseRun`
starts one, copies its output to its log and the reporter, and stops its whole process group;
`check_phase_result` turns a finished phase into success or one line naming its cause.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from glance.failure import failure_cause, log_tail
from glance.families import GlanceError
from glance.manifest import PHASES, WEIGHTS_NAME, PhaseName
from glance.memory.plans import TrainingPlan, oom_advice
from glance.progress import PhaseProgress, Reporter
from glance.run_plan import RunPlan, describe_source
from glance.simpletuner import find_simpletuner, phase_command, phase_env


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
        if plan.text_encoder_parts is not None:  # the text encoder's repo is served from the run's own cache
            env["HF_HUB_CACHE"] = str(plan.hub_cache_dir.resolve())
        command = phase_command(simpletuner, plan.config_paths[phase])
        launches.append(PhaseLaunch(phase, command, env, plan.output_dir))
    return launches


def accelerate_config_path(plan: RunPlan, num_processes: int) -> Path | None:
    if num_processes == 1:
        return None
    return plan.settings.config_dir / f"accelerate-{num_processes}.yaml"


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


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
        line = _ANSI_ESCAPE.sub("", line)  # SimpleTuner colours its log lines even into a pipe
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


def check_phase_result(run: PhaseRun, code: int, lora_dir: Path, memory: TrainingPlan) -> None:
    """Raise unless the phase exited 0 AND left its weights (Ctrl-C inside SimpleTuner exits 0).

    The log is read once: its last exception is the cause shown, and a CUDA out-of-memory error in
    it adds the next lighter plan to the error line.
    """
    if code == 0 and (lora_dir / WEIGHTS_NAME).is_file():
        return
    phase = run.launch.phase
    lines = log_tail(run.log_path)
    if code != 0:
        print(f"{phase}: {failure_cause(lines) or 'no exception in its output'}", file=sys.stderr)
        failure = f"the {phase} phase failed (exit code {code}); full log: {run.log_path}"
    else:
        failure = f"the {phase} phase exited 0 but wrote no {lora_dir / WEIGHTS_NAME}; full log: {run.log_path}"
    advice = oom_advice("\n".join(lines), memory)
    raise GlanceError(f"{failure}; {advice}" if advice is not None else failure)


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
