"""Tiny offline pipelines for every family, and LoRAs for them saved the way SimpleTuner saves its own."""

from pathlib import Path

import pytest

from glance.families import FAMILIES, model_schedule
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
