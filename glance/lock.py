"""One `glance train` per run folder: a lock file holding the running process id.

A second run on the same folder stops at once and names the process that holds it. A lock left by
a run that was killed (its process is gone) is taken over, not obeyed.
"""

from __future__ import annotations

import os
from pathlib import Path

from glance.families import GlanceError
from glance.files import write_atomic

LOCK_NAME = "glance.lock"


def pid_alive(pid: int) -> bool:
    """True while process `pid` exists and is not a zombie (a zombie's run is over)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc (macOS): the signal answer is all there is
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class RunLock:
    """`with RunLock(folder):` holds `folder/glance.lock` for this process."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_NAME
        self.pid = os.getpid()

    def holder(self) -> int | None:
        """The pid recorded in the lock, or None when there is no readable lock."""
        try:
            return int(self.path.read_text().strip())
        except (OSError, ValueError):
            return None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = self.holder()
            if holder is not None and holder != self.pid and pid_alive(holder):
                raise self._busy(holder) from None
            # Stale (its process is gone) or unreadable: take it over.
            write_atomic(self.path, f"{self.pid}\n")
        except OSError as exc:
            raise GlanceError(f"cannot lock {self.path.parent}: {exc.strerror or exc}") from None
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(f"{self.pid}\n")
        holder = self.holder()
        if holder != self.pid:  # another run took over the same stale lock at the same moment
            raise self._busy(holder)

    def release(self) -> None:
        if self.holder() == self.pid:
            self.path.unlink(missing_ok=True)

    def _busy(self, holder: int | None) -> GlanceError:
        return GlanceError(
            f"{self.path.parent} is being trained by process {holder}; wait for it to finish, "
            "stop it, or pass another --output-dir"
        )

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
