"""Tiny offline pipelines for every family, and LoRAs for them saved the way SimpleTuner saves its own."""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from glance import __version__
from glance.families import FAMILIES, model_schedule
from glance.manifest import MANIFEST_NAME, PhaseRecord, RunManifest
from glance.schedule import TimestepLists, default_lists
from glance.tiny import build_tiny_model, load_transformer, write_random_lora

SIZE = 32  # px: a tiny VAE barely downsamples, so this keeps the token count (and the test time) small


class TinyFamily:
    """One family's tiny model, its default lists at SIZE, and a slow and a fast LoRA for it."""

    def __init__(self, family: str, root: Path):
        self.family = family
        self.model = build_tiny_model(family, root / "models" / family)
        self.lists: TimestepLists = default_lists(
            FAMILIES[family], model_schedule(str(self.model), FAMILIES[family]), SIZE
        )
        self.slow = write_random_lora(root / "loras" / family / "slow", load_transformer(self.model), family, seed=1)
        self.fast = write_random_lora(root / "loras" / family / "fast", load_transformer(self.model), family, seed=2)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """tiny(family) -> TinyFamily, each built once per session."""
    root = tmp_path_factory.mktemp("tiny")
    built: dict[str, TinyFamily] = {}

    def get(family: str) -> TinyFamily:
        if family not in built:
            built[family] = TinyFamily(family, root)
        return built[family]

    return get


def write_finished_run(tiny_family: TinyFamily, output: Path) -> Path:
    """A run folder whose manifest points at a tiny model and its two LoRAs, as a finished `glance train` leaves it."""
    finished = {
        name: PhaseRecord(lora_dir=str(folder), inputs_sha256="0" * 64, duration_s=1.0, finished_at=datetime.now(UTC))
        for name, folder in (("slow", tiny_family.slow), ("fast", tiny_family.fast))
    }
    RunManifest(
        glance_version=__version__,
        model=str(tiny_family.model),
        family=tiny_family.family,
        resolution=SIZE,
        slow_timesteps=list(tiny_family.lists.slow),
        fast_timesteps=list(tiny_family.lists.fast),
        train_guidance=1.0 if tiny_family.family == "flux" else None,
        seed=0,
        steps=4,
        rank=4,
        learning_rate=5e-4,
        phases=finished,
    ).save(output / MANIFEST_NAME)
    return output
