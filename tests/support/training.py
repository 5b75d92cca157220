"""The session's one real training run, made by `glance demo` (tiny Flux, real SimpleTuner on CPU).

Every test that needs trained LoRAs shares it: a real SimpleTuner phase costs ~45 s on 2 cores.
"""

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from glance.demo import DEMO_RESOLUTION
from glance.train import RunPlan, TrainSettings, plan_run

USER_DEBUG_LOG = "the user's own debug.log, not SimpleTuner's\n"
STEPS = 4  # fewer than the demo's default: enough to move the LoRAs, start-up dominates anyway


def run_glance(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The real entry point, offline, with the real SimpleTuner."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("GLANCE_SIMPLETUNER", None)
    return subprocess.run(
        [sys.executable, "-m", "glance", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


@dataclass
class TrainedRun:
    root: Path  # the demo's workdir
    plan: RunPlan
    data_before: dict[str, bytes]  # the pair as written before training
    demo: subprocess.CompletedProcess

    @property
    def model(self) -> Path:
        return self.root / "tiny-flux"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def output_text(self) -> str:
        return self.demo.stdout + self.demo.stderr

    def train_args(self) -> list[str]:
        """`glance train` options that reproduce the demo's run exactly (so it is up to date)."""
        return [
            "train", str(self.data / "glance.png"), "--model", str(self.model), "--resolution", str(DEMO_RESOLUTION),
            "--steps", str(STEPS), "--device", "cpu", "--output-dir", str(self.output),
            "--config-dir", str(self.root / "config"),
        ]  # fmt: skip

    def train(self, *extra: str) -> subprocess.CompletedProcess:
        return run_glance(*self.train_args(), *extra, cwd=self.root)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> TrainedRun:
    from glance.tiny import write_sample_pair

    root = tmp_path_factory.mktemp("demo")
    # The demo writes this same pair itself; writing it first lets the tests prove it stays untouched.
    write_sample_pair(root / "data", size=DEMO_RESOLUTION)
    data_before = {p.name: p.read_bytes() for p in (root / "data").iterdir()}
    # SimpleTuner truncates ./debug.log at start-up: glance must run it where that harms nobody.
    (root / "debug.log").write_text(USER_DEBUG_LOG)
    demo = run_glance("demo", "--workdir", str(root), "--steps", str(STEPS), cwd=root)
    assert demo.returncode == 0, f"glance demo failed:\n{demo.stdout}\n{demo.stderr}"
    model = root / "tiny-flux"
    settings = TrainSettings(
        image=root / "data/glance.png", model=str(model), resolution=DEMO_RESOLUTION, steps=STEPS, device="cpu"
    )
    return TrainedRun(root, plan_run(settings), data_before, demo)
