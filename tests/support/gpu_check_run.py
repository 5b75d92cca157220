"""The session's quantized run: benchmarks/gpu_check.py --small on the CPU (real SimpleTuner, real glance).

One run serves three purposes: the CPU test of the GPU check's logic, the real two-phase tiny-FLUX
training with --quantize int8 --gradient-checkpointing whose LoRAs sample with `glance infer --quantize int8`,
and the real `glance train --phases parallel` (both int8 phases at once, as --phases parallel asks).
It costs about three SimpleTuner phases (int8 slow + fast, the bf16 baseline's slow phase) and one sampling.
"""

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STEPS = 3  # s/step needs two intervals after the first step


@dataclass
class GpuCheckRun:
    workdir: Path
    results: dict
    process: subprocess.CompletedProcess

    @property
    def stages(self) -> dict:
        return self.results["stages"]


@pytest.fixture(scope="session")
def gpu_check_run(tmp_path_factory) -> GpuCheckRun:
    work = tmp_path_factory.mktemp("gpu-check")
    results = work / "gpu_check.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    env.pop("GLANCE_SIMPLETUNER", None)
    command = [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--small", "--device", "cpu"]
    command += ["--steps", str(STEPS), "--phases", "parallel", "--workdir", str(work), "--json", str(results)]
    command += ["--budget", "1500"]  # every stage here: the default budget is a GPU machine's time limit
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, f"gpu_check failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return GpuCheckRun(work, json.loads(results.read_text()), done)
