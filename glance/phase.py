"""The phase boundary: one SimpleTuner phase's child process, started, watched, stopped, judged.

`phase_launches` says exactly what each phase runs (command, environment, folder); `PhaseRun`
starts one, copies its output to its log and the reporter, and stops every process it started;
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
    cwd: Path  # the phase's working folder in the run folder (see RunPlan)

    def env_changes(self, base: dict[str, str] | None = None) -> dict[str, str | None]:
        """The variables glance sets (value) or removes (None) relative to `base`."""
        base = dict(os.environ if base is None else base)
        changes: dict[str, str | None] = {k: v for k, v in self.env.items() if base.get(k) != v}
        changes.update({k: None for k in base if k not in self.env})
        return changes


def phase_launches(plan: RunPlan) -> list[PhaseLaunch]:
    simpletuner = find_simpletuner()
    launches = []
    for phase in PHASES:
        gpus = plan.mode.gpus[phase] if plan.mode.gpus is not None else None  # own GPU set(s) when there are enough
        accelerate = accelerate_config_path(plan, phase)
        env = phase_env(simpletuner, cuda=plan.cuda, gpus=gpus, accelerate_config=accelerate)
        if plan.text_encoder_parts is not None:  # the text encoder's repo is served from the run's own cache
            env["HF_HUB_CACHE"] = str(plan.hub_cache_dir.resolve())
        command = phase_command(simpletuner, plan.config_paths[phase])
        launches.append(PhaseLaunch(phase, command, env, plan.work_dir(phase)))
    return launches


def accelerate_config_path(plan: RunPlan, phase: PhaseName) -> Path | None:
    """Multi-GPU phases only: one file per phase, each with its own rendezvous port (both may run at once)."""
    if plan.settings.num_processes == 1:
        return None
    return plan.settings.config_dir / f"accelerate-{plan.settings.num_processes}-{phase}.yaml"


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class PhaseRun:
    """A running phase: the child, a thread copying its output to the log and the reporter."""

    def __init__(self, launch: PhaseLaunch, log_path: Path, total_steps: int, reporter: Reporter):
        self.launch = launch
        self.log_path = log_path
        self.progress = PhaseProgress(launch.phase, total_steps)
        self.reporter = reporter
        log_path.parent.mkdir(parents=True, exist_ok=True)
        launch.cwd.mkdir(parents=True, exist_ok=True)
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
        stop_runs([self])

    def wait(self) -> int:
        code = self.process.wait()
        self._reader.join(timeout=10)
        self._log.close()
        return code

    @property
    def duration(self) -> float:
        return time.monotonic() - self.started


def stop_runs(runs: list[PhaseRun]) -> None:
    """SIGTERM to every process group the runs started, SIGKILL after 10 s to what is left of them.

    `simpletuner train` starts `accelerate launch` in a session of its own (setsid), so a child's
    own group is not all of it: the groups of all its descendants are noted first, while the tree
    is still whole, and each is signalled. All runs are signalled before any is waited for.
    """
    groups = [group for run in runs if run.process.poll() is None for group in _descendant_groups(run.process.pid)]
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        for group in groups:
            try:
                os.killpg(group, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _any_alive(groups):
            time.sleep(0.05)
        if not _any_alive(groups):
            break
    for run in runs:
        run.process.poll()  # reaped


def _process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, process group) of every live process, from /proc (empty where there is none)."""
    table = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":  # a zombie has finished: only its parent's wait is left
            table[int(entry.name)] = (int(fields[1]), int(fields[2]))
    return table


def _descendant_groups(pid: int) -> list[int]:
    """The process groups of `pid` and of all its descendants: `pid`'s own first."""
    table = _process_table()
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, (ppid, _) in table.items() if ppid == parent and child not in tree]
        tree.update(children)
        frontier.extend(children)
    return [pid] + sorted({table[p][1] for p in tree if p in table} - {pid, os.getpgrp()})


def _any_alive(groups: list[int]) -> bool:
    members = {group for _, group in _process_table().values()}
    if not members and not Path("/proc/self").exists():  # no /proc: ask each group
        return any(_group_exists(group) for group in groups)
    return any(group in members for group in groups)


def _group_exists(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def phase_failed(code: int, lora_dir: Path) -> bool:
    """A phase succeeded only when it exited 0 AND left its weights (Ctrl-C inside SimpleTuner exits 0)."""
    return code != 0 or not (lora_dir / WEIGHTS_NAME).is_file()


def check_phase_result(
    run: PhaseRun, code: int, lora_dir: Path, memory: TrainingPlan, stopped: list[str] | tuple = ()
) -> None:
    """Raise unless the phase succeeded (`phase_failed`); `stopped`: the phases stopped because of it.

    The log is read once: its last exception is the cause shown (on stderr, before the error line),
    and a CUDA out-of-memory error in it adds the next lighter plan to the error line.
    """
    if not phase_failed(code, lora_dir):
        return
    phase = run.launch.phase
    lines = log_tail(run.log_path)
    also = f"; the {' and '.join(stopped)} phase was stopped, not done" if stopped else ""
    if code != 0:
        print(f"{phase}: {failure_cause(lines) or 'no exception in its output'}", file=sys.stderr)
        failure = f"the {phase} phase failed (exit code {code}){also}; full log: {run.log_path}"
    else:
        failure = (
            f"the {phase} phase exited 0 but wrote no {lora_dir / WEIGHTS_NAME}{also}; full log: {run.log_path}"
        )
    advice = oom_advice("\n".join(lines), memory)
    raise GlanceError(f"{failure}; {advice}" if advice is not None else failure)


def describe_launches(plan: RunPlan, launches: list[PhaseLaunch], emit: Callable[[str], None] = print) -> None:
    """The --dry-run report: files, then each phase's exact command and environment changes."""
    import shlex

    emit(f"model: {describe_source(plan.source)}")
    emit(plan.memory.describe())
    emit(plan.mode.describe())
    emit("config files:")
    for path in plan.files():
        emit(f"  {path}")
    for launch in launches:
        emit(f"{launch.phase} phase:")
        emit(f"  in: {launch.cwd}")
        emit(f"  command: {shlex.join(launch.command)}")
        for name, value in sorted(launch.env_changes().items()):
            emit(f"  env: {name}={shlex.quote(value)}" if value is not None else f"  env: unset {name}")
