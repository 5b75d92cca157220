"""Atomic writes (files and whole folders) and the no-overwrite-without---force rule, shared by every output."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from glance.families import GlanceError


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write to a temporary file beside `path`, then rename it over `path` (never a half file)."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise GlanceError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise GlanceError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise


def check_writable_dir(directory: Path) -> None:
    """Fail early, before anything is written, when `directory` cannot be created or written."""
    directory = Path(directory)
    probe = directory
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise GlanceError(f"cannot write into {directory}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise GlanceError(f"cannot write into {directory}: permission denied")


def needs_writing(path: Path, new: bytes | str, force: bool) -> bool:
    """True when `path` must be (re)written; raises when it holds something else and not `force`.

    An existing file with exactly the new content is left alone, so re-running is harmless.
    """
    path = Path(path)
    if not path.exists():
        return True
    payload = new.encode("utf-8") if isinstance(new, str) else new
    if path.is_file() and path.read_bytes() == payload:
        return False
    if not force:
        raise GlanceError(f"{path} exists and differs from what glance would write; pass --force to overwrite it")
    return True


def replace_folder(built: Path, path: Path) -> None:
    """Rename the finished folder `built` to `path`; an older folder at `path` is moved aside, then removed."""
    if not path.exists():
        os.replace(built, path)
        return
    retired = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old."))
    os.replace(path, retired / "model")
    os.replace(built, path)
    shutil.rmtree(retired, ignore_errors=True)


def folder_fingerprint(folder: Path) -> str:
    """Every file under `folder` by path, size and modification time (links followed), as one sha256.

    Cheap even for a 24 GB model (no file is read), and it changes when weights are replaced in
    place: a local model trained further, re-exported or copied again under the same path.
    """
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path.relative_to(folder).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """The sha256 of a file's content, read in 1 MiB pieces (a LoRA or a weights file may be large)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
