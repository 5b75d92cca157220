"""Why a child process failed, read from its output: the last exception it raised.

Shared by the training phases (glance/phase.py) and by `glance infer --num-processes`, whose
processes run under accelerate too (glance/spread.py). Only the standard library: importing it
loads no torch, no SimpleTuner and no training run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# "torch.OutOfMemoryError: CUDA out of memory ...", "[rank0]: ValueError: ...", "OSError: ..."
_EXCEPTION_LINE = re.compile(
    r"^(?:\[rank\d+\]:\s*)?((?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Exit))(?::\s*(.*))?$"
)
# The launcher's own exceptions: they say that the process it started failed, not why.
_WRAPPER_EXCEPTIONS = ("subprocess.CalledProcessError", "CalledProcessError", "SystemExit", "KeyboardInterrupt")


def failure_cause(lines: Sequence[str]) -> str | None:
    """The root cause of a failed run (a SimpleTuner phase, an accelerate worker), read from its output:
    the last exception it raised, as "Name: message".

    accelerate prints its own `subprocess.CalledProcessError` (and TorchDynamo its statistics) after
    the traceback of the process it started; those say only that the process failed and are skipped.
    Colour codes are removed. None when the output holds no exception line.
    """
    for raw in reversed(lines):
        line = _ANSI.sub("", raw).strip()
        match = _EXCEPTION_LINE.match(line)
        if match is None or match.group(1) in _WRAPPER_EXCEPTIONS:
            continue
        name, message = match.groups()
        return f"{name}: {message}" if message else name
    return None


def log_tail(path: Path, limit: int = 1 << 20) -> list[str]:
    """The last `limit` bytes of a log, as lines (a verbose log can be large)."""
    path = Path(path)
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - limit))
        return handle.read().decode("utf-8", errors="replace").splitlines()
