"""One real `glance train` per newer family (Chroma, Z-Image, FLUX.2 [klein]) on its tiny model, shared by its tests.

Trained as a user runs it (the real SimpleTuner on CPU, the family detected from model_index.json),
with tests/support/trained_sigmas/ on PYTHONPATH: it records the sigmas of every batch SimpleTuner
fed the model, after the family's own prepare_batch, into `trained-sigmas.jsonl`.
"""

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from glance.manifest import MANIFEST_NAME, RunManifest, load_manifest
from glance.tiny import write_sample_pair

RECORDER = Path(__file__).parent / "trained_sigmas"
RESOLUTION = 64
STEPS = 2


def run_glance(*args: str, cwd: Path, **env_extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", **env_extra)
    env.pop("GLANCE_SIMPLETUNER", None)
    return subprocess.run(
        [sys.executable, "-m", "glance", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=1800
    )


@dataclass
class FamilyRun:
    family: str
    root: Path
    model: Path
    train: subprocess.CompletedProcess

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def manifest(self) -> RunManifest:
        return load_manifest(self.output / MANIFEST_NAME)

    def config(self, phase: str) -> dict:
        return json.loads((self.root / "config" / f"glance-{phase}.json").read_text())

    def trained_sigmas(self, phase: str) -> list[float]:
        """Every sigma SimpleTuner trained the phase on, batch by batch, as the model saw it."""
        lines = (self.root / "trained-sigmas.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        # SimpleTuner's output_dir is the LoRA folder as seen from the phase's working folder: ../glance-PHASE
        return [s for r in records if Path(r["output_dir"]).name == f"glance-{phase}" for s in r["sigmas"]]


def train_family(family: str, tiny, tmp_path_factory) -> FamilyRun:
    root = tmp_path_factory.mktemp(f"{family}-run")
    write_sample_pair(root / "data", size=RESOLUTION)
    model = tiny(family).model
    pythonpath = os.pathsep.join(p for p in (str(RECORDER), os.environ.get("PYTHONPATH")) if p)
    train = run_glance(
        "train", "data/glance.png", "--model", str(model), "--resolution", str(RESOLUTION),
        "--steps", str(STEPS), "--device", "cpu",
        cwd=root, PYTHONPATH=pythonpath, GLANCE_TEST_TRAINED_SIGMAS=str(root / "trained-sigmas.jsonl"),
    )  # fmt: skip
    assert train.returncode == 0, f"glance train ({family}) failed:\n{train.stdout}\n{train.stderr[-4000:]}"
    return FamilyRun(family, root, model, train)


@pytest.fixture(scope="session")
def chroma_run(tiny, tmp_path_factory) -> FamilyRun:
    return train_family("chroma", tiny, tmp_path_factory)


@pytest.fixture(scope="session")
def z_image_run(tiny, tmp_path_factory) -> FamilyRun:
    return train_family("z_image", tiny, tmp_path_factory)


@pytest.fixture(scope="session")
def flux2_run(tiny, tmp_path_factory) -> FamilyRun:
    return train_family("flux2", tiny, tmp_path_factory)  # FLUX.2 [klein] base
