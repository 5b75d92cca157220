"""What glance shows while it works, for `glance train`, `glance infer` and `glance demo` alike.

One live line on a terminal (rewritten in place), plain lines in a log, and the result lines on
stdout. The libraries' own output (diffusers' and transformers' loading and step bars, their load
messages and warnings) is kept off the console unless --verbose asks for it.

Only the standard library at the top: `glance --help` imports this module's importers.
"""

from __future__ import annotations

import re
import shutil
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

_LIBRARIES = r"(diffusers|transformers|peft|accelerate|huggingface_hub|torch)(\.|$)"


class Progress(Protocol):
    """Something with a step count that the reporter can show: a training phase or an image."""

    key: str  # progress objects with the same key share a slot of the live line
    step: int
    total: int
    log_tenths: ClassVar[bool]  # in a log: a line per tenth (phases), or none (images have their result line)

    def render(self) -> str: ...


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
    started: float = field(default_factory=time.monotonic)
    started_steps: bool = False  # SimpleTuner has shown its step bar
    log_tenths: ClassVar[bool] = True

    @property
    def key(self) -> str:
        return self.phase

    def update(self, line: str) -> bool:
        """Read one line of SimpleTuner's output; True when it moved the progress."""
        step, loss = _STEP.search(line), _LOSS.search(line)
        if step is None or int(step.group(2)) != self.total:
            return False
        self.step = int(step.group(1))
        self.started_steps = True
        if loss is not None:
            self.loss = float(loss.group(1))
        return True

    def render(self) -> str:
        loss = f"  loss {self.loss:.4f}" if self.loss is not None else ""
        if not self.started_steps:
            return f"{self.phase}: starting SimpleTuner (loading the model, caching)  {_clock(self.started)}"
        return f"{self.phase}: step {self.step}/{self.total}{loss}  {_clock(self.started)}"


@dataclass
class ImageProgress:
    """One image being sampled: `what` is e.g. "glance-002.png" or "glance-002-base50.png (base model)"."""

    what: str
    total: int
    detail: str = ""  # seed and prompt, shortened
    step: int = 0
    started: float = field(default_factory=time.monotonic)
    key: ClassVar[str] = "image"  # one image at a time per process: they share one slot
    log_tenths: ClassVar[bool] = False

    def advance(self) -> None:
        self.step += 1

    def render(self) -> str:
        detail = f"  {self.detail}" if self.detail else ""
        return f"{self.what}: step {self.step}/{self.total}  {_clock(self.started)}{detail}"


class Reporter:
    """Where output goes: progress and messages to stderr, result lines to stdout.

    On a terminal, progress is one live line (one slot per phase when two phases run at once);
    in a log, a training phase gets a plain line per tenth and an image none (its result line says
    it is done). `verbose` streams the raw output instead of the live line; `quiet` keeps only
    the result lines.
    """

    def __init__(self, verbose: bool = False, stream=None, *, quiet: bool = False, out=None):
        self.verbose = verbose and not quiet
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.out = out or sys.stdout
        self.live = self.stream.isatty() and not self.verbose and not quiet
        self._lock = threading.Lock()
        self._shown: dict[str, str] = {}
        self._logged_tenth: dict[str, int] = {}

    def message(self, text: str) -> None:
        if self.quiet:
            return
        with self._lock:
            self._clear_live()
            print(text, file=self.stream, flush=True)

    def result(self, text: str) -> None:
        """A line the user runs the command for (the files written): shown even with --quiet."""
        with self._lock:
            self._clear_live()
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
                self._shown[progress.key] = progress.render()
                line = "  |  ".join(self._shown.values())
                width = shutil.get_terminal_size().columns - 1  # a wrapped line could not be rewritten in place
                self.stream.write("\r\x1b[2K" + line[:width])
                self.stream.flush()
                return
            if not progress.log_tenths:
                return
            tenth = progress.step * 10 // progress.total
            if tenth > self._logged_tenth.get(progress.key, 0):
                self._logged_tenth[progress.key] = tenth
                print(progress.render(), file=self.stream, flush=True)

    def done(self) -> None:
        """Clear the live line (before the command's final output)."""
        with self._lock:
            self._clear_live()

    def _clear_live(self) -> None:
        if self.live and self._shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self._shown.clear()


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
