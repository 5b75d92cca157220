"""What glance shows while it works, for `glance train`, `glance infer` and `glance demo` alike.

On a terminal, rich's live display: a bar per task (each training phase, when two run at once; the
image being sampled), with its step, loss and rate, redrawn in place; messages print above it. In a
log, plain lines: a line per tenth of a training phase, none for an image (its result line says it
is done). Result lines go to stdout. What rich does not do is here: reading SimpleTuner's output.
The libraries' own output (diffusers' and transformers' loading and step bars, their load messages
and warnings) is kept off the console unless --verbose asks for it.

Only the standard library at the top (rich is imported when a live display starts): `glance --help`
imports this module's importers.
"""

from __future__ import annotations

import re
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

# tqdm's line: "Epoch 1/0, Steps:  40%|████      | 2/5 [00:03<00:04,  1.5s/it, lr=0.0005, step_loss=0.0973]"
_STEP = re.compile(r"(\d+)/(\d+) \[")
_LOSS = re.compile(r"\bstep_loss=([-+0-9.eE]+|nan)")
_RATE = re.compile(r"\b([0-9.]+ ?(?:s/it|it/s))")

_LIBRARIES = r"(diffusers|transformers|peft|accelerate|huggingface_hub|torch)(\.|$)"


class Progress(Protocol):
    """Something with a step count that the reporter can show: a training phase or an image."""

    key: str  # progress objects with the same key share a bar
    step: int
    total: int
    log_tenths: ClassVar[bool]  # in a log: a line per tenth (phases), or none (images have their result line)

    @property
    def label(self) -> str: ...  # the bar's name

    @property
    def note(self) -> str: ...  # what follows the bar

    @property
    def counting(self) -> bool: ...  # False while there is no step to count yet (an open-ended bar)

    def render(self) -> str: ...  # the plain line


def _clock(started: float) -> str:
    elapsed = int(time.monotonic() - started)
    return f"{elapsed // 60}:{elapsed % 60:02d}"


@dataclass
class PhaseProgress:
    """A SimpleTuner phase, read from its tqdm lines."""

    phase: str
    total: int
    step: int = 0
    loss: float | None = None
    rate: str | None = None  # tqdm's own, e.g. "2.36s/it"
    started: float = field(default_factory=time.monotonic)
    started_steps: bool = False  # SimpleTuner has shown its step bar
    log_tenths: ClassVar[bool] = True

    @property
    def key(self) -> str:
        return self.phase

    @property
    def label(self) -> str:
        return self.phase

    @property
    def counting(self) -> bool:
        return self.started_steps

    def update(self, line: str) -> bool:
        """Read one line of SimpleTuner's output; True when it moved the progress."""
        step, loss, rate = _STEP.search(line), _LOSS.search(line), _RATE.search(line)
        if step is None or int(step.group(2)) != self.total:
            return False
        self.step = int(step.group(1))
        self.started_steps = True
        if loss is not None:
            self.loss = float(loss.group(1))
        if rate is not None and self.step > 0:
            self.rate = rate.group(1).replace(" ", "")
        return True

    @property
    def note(self) -> str:
        if not self.started_steps:
            return "starting SimpleTuner (loading the model, caching)"
        loss = f"loss {self.loss:.4f}" if self.loss is not None else ""
        return "  ".join(part for part in (loss, self.rate or "") if part)

    def render(self) -> str:
        if not self.started_steps:
            return f"{self.phase}: {self.note}  {_clock(self.started)}"
        note = f"  {self.note}" if self.note else ""
        return f"{self.phase}: step {self.step}/{self.total}{note}  {_clock(self.started)}"


@dataclass
class ImageProgress:
    """One image being sampled: `what` is e.g. "glance-002.png" or "glance-002-base50.png (base model)"."""

    what: str
    total: int
    detail: str = ""  # seed and prompt, shortened
    step: int = 0
    started: float = field(default_factory=time.monotonic)
    key: ClassVar[str] = "image"  # one image at a time per process: they share one bar
    log_tenths: ClassVar[bool] = False
    counting: ClassVar[bool] = True

    def advance(self) -> None:
        self.step += 1

    @property
    def label(self) -> str:
        return self.what

    @property
    def note(self) -> str:
        return self.detail

    def render(self) -> str:
        detail = f"  {self.detail}" if self.detail else ""
        return f"{self.what}: step {self.step}/{self.total}  {_clock(self.started)}{detail}"


class Reporter:
    """Where output goes: progress and messages to stderr, result lines to stdout.

    On a terminal, progress is rich's live display, a bar per key (both phases at once get two);
    in a log, a training phase gets a plain line per tenth and an image none. `verbose` streams
    the raw output instead of the display; `quiet` keeps only the result lines.
    """

    def __init__(self, verbose: bool = False, stream=None, *, quiet: bool = False, out=None):
        self.verbose = verbose and not quiet
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.out = out or sys.stdout
        self.live = self.stream.isatty() and not self.verbose and not quiet
        self._lock = threading.RLock()
        self._display = None  # rich.progress.Progress while it is up
        self._tasks: dict[str, int] = {}  # key -> the display's task id
        self._logged_tenth: dict[str, int] = {}

    def message(self, text: str) -> None:
        if self.quiet:
            return
        with self._lock:
            if self._display is not None:  # printed above the bars, which stay
                self._display.console.print(text, markup=False, highlight=False, soft_wrap=True)
            else:
                print(text, file=self.stream, flush=True)

    def result(self, text: str) -> None:
        """A line the user runs the command for (the files written): shown even with --quiet."""
        with self._lock:
            self._stop_display()
            print(text, file=self.out, flush=True)

    def raw(self, phase: str, line: str) -> None:
        if self.verbose:
            with self._lock:
                print(f"[{phase}] {line}", file=self.stream, flush=True)

    def progress(self, progress: Progress) -> None:
        if self.verbose or self.quiet:  # verbose: the raw lines already show it
            return
        with self._lock:
            if self.live:
                self._show(progress)
                return
            if not progress.log_tenths:
                return
            tenth = progress.step * 10 // progress.total
            if tenth > self._logged_tenth.get(progress.key, 0):
                self._logged_tenth[progress.key] = tenth
                print(progress.render(), file=self.stream, flush=True)

    def end(self, progress: Progress) -> None:
        """Take `progress`'s bar off the display (its phase is over); the others stay."""
        with self._lock:
            task = self._tasks.pop(progress.key, None)
            if task is not None and self._display is not None:
                self._display.remove_task(task)

    def done(self) -> None:
        """Take the display down (before the command's final output)."""
        with self._lock:
            self._stop_display()

    def _show(self, progress: Progress) -> None:
        if self._display is None:
            self._display = _live_display(self.stream)
            self._display.start()
        fields = {
            "description": progress.label,
            "note": progress.note,
            "completed": progress.step,
            "total": progress.total if progress.counting else None,
        }
        task = self._tasks.get(progress.key)
        if task is None:
            self._tasks[progress.key] = self._display.add_task(**fields)
        else:
            self._display.update(task, **fields)

    def _stop_display(self) -> None:
        if self._display is not None:
            self._display.stop()  # transient: the bars are erased
            self._display = None
            self._tasks.clear()


def _live_display(stream):
    """rich's Progress on `stream`: name, bar, steps, elapsed time, then the note (loss and rate; seed, prompt)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(file=stream, force_terminal=True, highlight=False)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[note]}", markup=False),
    )
    return Progress(*columns, console=console, transient=True, refresh_per_second=4, redirect_stdout=False,
                    redirect_stderr=False)  # fmt: skip


@contextmanager
def library_output(verbose: bool):
    """Keep diffusers', transformers' and huggingface_hub's bars, load messages and warnings off the console.

    With `verbose` everything stays as the libraries print it. The previous settings come back
    afterwards. Imports the libraries, so call it only where they are about to be used anyway.
    A pipeline's own step bar is switched off on the pipeline (`set_progress_bar_config`).
    """
    if verbose:
        yield
        return
    import huggingface_hub.utils as hub_utils
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    saved = [(module, module.get_verbosity(), module.is_progress_bar_enabled())
             for module in (diffusers_logging, transformers_logging)]  # fmt: skip
    hub_bars = not hub_utils.are_progress_bars_disabled()
    try:
        for module, _, _ in saved:
            module.set_verbosity_error()
            module.disable_progress_bar()
        if hub_bars:
            hub_utils.disable_progress_bars()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=_LIBRARIES)
            yield
    finally:
        for module, verbosity, bars in saved:
            module.set_verbosity(verbosity)
            if bars:
                module.enable_progress_bar()
        if hub_bars:
            hub_utils.enable_progress_bars()
