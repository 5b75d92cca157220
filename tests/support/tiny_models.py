"""Tiny offline pipelines for every family, and LoRAs for them saved the way SimpleTuner saves its own."""

from pathlib import Path

import pytest

from glance.families import FAMILIES, get_family, model_schedule
from glance.schedule import TimestepLists, default_lists
from glance.tiny import build_tiny_model

SIZE = 32  # px: a tiny VAE barely downsamples, so this keeps the token count (and the test time) small
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def make_lora(folder: Path, transformer, family: str, *, seed: int, rank: int = 4, with_metadata: bool = True) -> Path:
    """Give `transformer` a LoRA with random non-zero weights and save it like SimpleTuner does.

    SimpleTuner trains with alpha = 4 x rank and saves through the pipeline's `save_lora_weights`
    with the peft config as `transformer_lora_adapter_metadata`; keys are
    `transformer.<module>.lora_A.weight` / `lora_B.weight`.
    """
    import diffusers
    import torch
    from diffusers.training_utils import _collate_lora_metadata
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    config = LoraConfig(r=rank, lora_alpha=4 * rank, init_lora_weights="gaussian", target_modules=LORA_TARGETS)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the same seed gives the same LoRA
        transformer.add_adapter(config)
        for name, parameter in transformer.named_parameters():
            if ".lora_B." in name:  # peft starts lora_B at zero: a LoRA without effect
                torch.nn.init.normal_(parameter, std=0.5)
    pipeline_class = getattr(diffusers, get_family(family).pipeline_class)
    metadata = _collate_lora_metadata({"transformer": transformer}) if with_metadata else {}
    pipeline_class.save_lora_weights(
        folder, transformer_lora_layers=get_peft_model_state_dict(transformer), safe_serialization=True, **metadata
    )
    return folder


def load_transformer(model: Path):
    from diffusers import AutoModel

    return AutoModel.from_pretrained(str(model), subfolder="transformer", use_safetensors=True)


class TinyFamily:
    """One family's tiny model, its default lists at SIZE, and a slow and a fast LoRA for it."""

    def __init__(self, family: str, root: Path):
        self.family = family
        self.model = build_tiny_model(family, root / "models" / family)
        self.lists: TimestepLists = default_lists(
            FAMILIES[family], model_schedule(str(self.model), FAMILIES[family]), SIZE
        )
        self.slow = make_lora(root / "loras" / family / "slow", load_transformer(self.model), family, seed=1)
        self.fast = make_lora(root / "loras" / family / "fast", load_transformer(self.model), family, seed=2)


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
