"""The session's one real training run (tiny Flux, real SimpleTuner on CPU), shared by every test."""

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from glance.tiny import build_tiny_model, write_sample_pair
from glance.train import RunPlan, TrainSettings, plan_run

STEPS = 4  # enough to move the LoRAs; each phase costs ~45 s on 2 cores, mostly start-up


@dataclass
class TrainedRun:
    root: Path
    model: Path
    plan: RunPlan
    data_before: dict[str, bytes]
    output_text: str = ""

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def output(self) -> Path:
        return self.root / "output"

    def train(self, *extra: str) -> subprocess.CompletedProcess:
        """`glance train` through the real entry point, in the run's folder."""
        args = ["train", "data/glance.png", "--model", str(self.model), "--resolution", "128"]
        args += ["--steps", str(STEPS), "--device", "cpu", *extra]
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        env.pop("GLANCE_SIMPLETUNER", None)
        return subprocess.run(
            [sys.executable, "-m", "glance", *args], cwd=self.root, env=env, capture_output=True, text=True, timeout=900
        )


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> TrainedRun:
    root = tmp_path_factory.mktemp("trained")
    model = build_tiny_model("flux", tmp_path_factory.getbasetemp() / "models" / "flux-train")
    write_sample_pair(root / "data")
    data_before = {p.name: p.read_bytes() for p in (root / "data").iterdir()}
    plan = plan_run(
        TrainSettings(image=root / "data/glance.png", model=str(model), resolution=128, steps=STEPS, device="cpu")
    )
    run = TrainedRun(root, model, plan, data_before)
    result = run.train()
    assert result.returncode == 0, f"glance train failed:\n{result.stdout}\n{result.stderr}"
    run.output_text = result.stdout + result.stderr
    return run
