"""Which GPU this is: its name and memory from nvidia-smi, or the card --gpu-memory names.

torch stays unimported: a plan is made before anything heavy loads.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

from pydantic import BaseModel, ConfigDict


class GpuInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    memory_gib: float


def parse_nvidia_smi(text: str, visible: str | None = None) -> GpuInfo | None:
    """The smallest visible GPU from `nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits`."""
    gpus = []
    for line in text.strip().splitlines():
        name, _, mib = line.rpartition(",")
        try:
            gpus.append(GpuInfo(name=name.strip(), memory_gib=round(float(mib) / 1024, 1)))
        except ValueError:
            continue
    if visible and all(part.strip().isdigit() for part in visible.split(",")):
        chosen = [int(part) for part in visible.split(",")]
        gpus = [gpu for index, gpu in enumerate(gpus) if index in chosen]
    return min(gpus, key=lambda gpu: gpu.memory_gib) if gpus else None


def visible_gpu_ids(text: str, visible: str | None = None) -> list[str]:
    """The GPUs a child process may be given, as CUDA_VISIBLE_DEVICES names them: the entries of
    `visible` when it is set (numbers within nvidia-smi's count, or UUIDs), else 0..count-1."""
    count = sum(1 for line in text.strip().splitlines() if "," in line)
    if visible is None:
        return [str(index) for index in range(count)]
    entries = [part.strip() for part in visible.split(",") if part.strip()]
    return [e for e in entries if not e.isdigit() or int(e) < count]


def _nvidia_smi() -> str | None:
    """nvidia-smi's name,memory.total lines (torch stays unimported); None when it cannot tell."""
    smi = shutil.which("nvidia-smi")
    return None if smi is None else _query(smi)


@functools.cache  # one plan asks several times (one phase, two at once, which GPUs); the cards do not change
def _query(smi: str) -> str | None:
    try:
        done = subprocess.run(
            [smi, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def detect_gpu() -> GpuInfo | None:
    """The smallest visible GPU's name and memory from nvidia-smi; None when it cannot tell."""
    text = _nvidia_smi()
    return None if text is None else parse_nvidia_smi(text, os.environ.get("CUDA_VISIBLE_DEVICES"))


def detect_gpu_ids() -> list[str] | None:
    """The visible GPUs, as CUDA_VISIBLE_DEVICES names them; None when nvidia-smi cannot tell."""
    text = _nvidia_smi()
    return None if text is None else visible_gpu_ids(text, os.environ.get("CUDA_VISIBLE_DEVICES"))


def gpu_for_plan(gpu_memory: float | None) -> GpuInfo | None:
    """--gpu-memory GB (a card to plan for), else the GPU nvidia-smi reports."""
    if gpu_memory is not None:
        return GpuInfo(name="as given by --gpu-memory", memory_gib=float(gpu_memory))
    return detect_gpu()
