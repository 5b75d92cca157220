"""A stand-in `nvidia-smi` on PATH: glance asks it (never torch) what GPUs there are."""

import os
import sys
from pathlib import Path


def fake_gpus(folder: Path, monkeypatch, *cards: str) -> None:
    """Put an `nvidia-smi` reporting `cards` ("name, MiB", one per GPU) first on PATH, all GPUs visible."""
    bin_dir = folder / "smi-bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(f"#!{sys.executable}\nprint({chr(10).join(cards)!r})\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
