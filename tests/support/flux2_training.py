"""The session's one real training run on a tiny FLUX.2 [klein] (real SimpleTuner on CPU), sigmas recorded.

SimpleTuner runs through tests/support/sigma_recording.py's wrapper, so the run also leaves the sigmas
every training batch was noised with, as SimpleTuner computed them (not as its config says).
"""

from dataclasses import dataclass
from pathlib import Path

import pytest
from support.sigma_recording import read_sigma_log, recording_simpletuner
from support.training import run_glance

from glance.tiny import build_tiny_model, write_sample_pair

KLEIN_RESOLUTION = 64  # 16 x 16 packed tokens on the tiny 2x VAE
KLEIN_STEPS = 6


@dataclass
class TrainedKlein:
    root: Path
    model: Path
    train: object  # the CompletedProcess of `glance train`
    sigma_log: Path

    @property
    def output(self) -> Path:
        return self.root / "output"

    def recorded(self) -> list[list[float]]:
        return read_sigma_log(self.sigma_log)


@pytest.fixture(scope="session")
def trained_klein(tmp_path_factory) -> TrainedKlein:
    root = tmp_path_factory.mktemp("klein")
    model = build_tiny_model("flux2", root / "model")
    image = write_sample_pair(root / "data", size=KLEIN_RESOLUTION)
    sigma_log = root / "sigmas.jsonl"
    recorder = {"GLANCE_SIMPLETUNER": str(recording_simpletuner(root)), "GLANCE_SIGMA_LOG": str(sigma_log)}
    train = run_glance(
        "train", str(image), "--model", str(model), "--resolution", str(KLEIN_RESOLUTION),
        "--steps", str(KLEIN_STEPS), "--device", "cpu", "--output-dir", str(root / "output"),
        "--config-dir", str(root / "config"), cwd=root, extra_env=recorder,
    )  # fmt: skip
    assert train.returncode == 0, f"glance train failed:\n{train.stdout}\n{train.stderr}"
    return TrainedKlein(root, model, train, sigma_log)
