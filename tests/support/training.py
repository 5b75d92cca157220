"""The session's one real training run, made by `glance demo` (the shipped shapes model, real SimpleTuner on CPU).

Every test that needs trained LoRAs shares it: a real SimpleTuner phase costs about a minute on 2 cores.
It is trained exactly as the demo and the quality benchmark's first pair are, so the quality tests
can hold it to the benchmark's figures.
"""

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from glance.demo import DEMO_STEPS, TRAINING_CAPTION, TRAINING_SEED
from glance.run_plan import RunPlan, TrainSettings, plan_run
from glance.smallmodel import RESOLUTION, shipped_model

USER_DEBUG_LOG = "the user's own debug.log, not SimpleTuner's\n"
STEPS = DEMO_STEPS  # the demo's own: the quality tests compare this pair with the benchmark's


def run_glance(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The real entry point, offline, with the real SimpleTuner (the demo takes ~5 min alone on 2 cores; the
    limit leaves room for the other process of the suite training at the same time)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("GLANCE_SIMPLETUNER", None)
    return subprocess.run(
        [sys.executable, "-m", "glance", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=1800
    )


@dataclass
class TrainedRun:
    root: Path  # the demo's workdir
    plan: RunPlan
    data_before: dict[str, bytes]  # the pair as written before training
    demo: subprocess.CompletedProcess

    @property
    def model(self) -> Path:
        return shipped_model()

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def samples(self) -> Path:  # the demo's images, sheet and judge report
        return self.output / "samples"

    @property
    def output_text(self) -> str:
        return self.demo.stdout + self.demo.stderr

    def train_args(self) -> list[str]:
        """`glance train` options that reproduce the demo's run exactly (so it is up to date)."""
        return [
            "train", str(self.data / "glance.png"), "--model", str(self.model), "--resolution", str(RESOLUTION),
            "--steps", str(STEPS), "--device", "cpu", "--output-dir", str(self.output),
            "--config-dir", str(self.root / "config"),
        ]  # fmt: skip

    def train(self, *extra: str) -> subprocess.CompletedProcess:
        return run_glance(*self.train_args(), *extra, cwd=self.root)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> TrainedRun:
    from glance.shapes import write_pair

    root = tmp_path_factory.mktemp("demo")
    # The demo writes this same pair itself; writing it first lets the tests prove it stays untouched.
    write_pair(root / "data", TRAINING_CAPTION, TRAINING_SEED)
    data_before = {p.name: p.read_bytes() for p in (root / "data").iterdir()}
    # SimpleTuner truncates ./debug.log at start-up: glance must run it where that harms nobody.
    (root / "debug.log").write_text(USER_DEBUG_LOG)
    demo = run_glance("demo", "--workdir", str(root), "--steps", str(STEPS), cwd=root)
    assert demo.returncode == 0, f"glance demo failed:\n{demo.stdout}\n{demo.stderr}"
    settings = TrainSettings(
        image=root / "data/glance.png", model=str(shipped_model()), resolution=RESOLUTION, steps=STEPS, device="cpu"
    )
    return TrainedRun(root, plan_run(settings), data_before, demo)
