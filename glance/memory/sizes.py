"""What a model weighs: parameter counts, width and depth, read without loading a tensor.

Sizes come from the model itself: the safetensors headers of a local (or Hugging Face cached)
diffusers folder give every component's parameter count; the transformer's config gives its width
and depth. A short table of known hub ids is the fallback.

Nothing here imports torch.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from glance.families import Family, GlanceError, is_local_model


class ModelSizes(BaseModel):
    """What the estimate needs to know about a model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    transformer_params: int
    text_encoder_params: dict[str, int]  # diffusers component name -> parameters
    vae_params: int
    width: int  # transformer hidden size
    blocks: int  # transformer blocks (FLUX: double + single)
    source: str  # where the numbers came from

    @property
    def large_text_encoder(self) -> str | None:
        """The text encoder worth quantizing (T5-XXL, Qwen2.5-VL): the largest one."""
        if not self.text_encoder_params:
            return None
        return max(self.text_encoder_params, key=self.text_encoder_params.get)


_SD3_TEXT_ENCODERS = {"text_encoder": 123_650_304, "text_encoder_2": 694_659_840, "text_encoder_3": 4_762_310_656}
# Fallback sizes of known hub models (parameters from their safetensors; width = heads x head dim).
KNOWN_SIZES: dict[str, ModelSizes] = {
    "black-forest-labs/FLUX.1-dev": ModelSizes(
        transformer_params=11_901_408_320,
        text_encoder_params={"text_encoder": 123_060_480, "text_encoder_2": 4_762_310_656},
        vae_params=83_819_683,
        width=3072,
        blocks=57,
        source="known size of black-forest-labs/FLUX.1-dev",
    ),
    "Qwen/Qwen-Image": ModelSizes(
        transformer_params=20_430_401_088,
        text_encoder_params={"text_encoder": 8_292_166_656},
        vae_params=126_892_531,
        width=3072,
        blocks=60,
        source="known size of Qwen/Qwen-Image",
    ),
    "Qwen/Qwen-Image-2512": ModelSizes(  # Qwen-Image's classes and shapes, retrained
        transformer_params=20_430_401_088,
        text_encoder_params={"text_encoder": 8_292_166_656},
        vae_params=126_892_531,
        width=3072,
        blocks=60,
        source="known size of Qwen/Qwen-Image-2512",
    ),
    # Chroma and Z-Image: parameters of diffusers' default configs (the released models'), counted on the
    # meta device; their VAE is FLUX's, Z-Image's encoder Qwen3-4B (embeddings tied, saved once).
    "lodestones/Chroma1-HD": ModelSizes(
        transformer_params=8_899_983_424,
        text_encoder_params={"text_encoder": 4_762_310_656},
        vae_params=83_819_683,
        width=3072,
        blocks=57,
        source="known size of lodestones/Chroma1-HD",
    ),
    "Tongyi-MAI/Z-Image": ModelSizes(
        transformer_params=6_154_908_736,
        text_encoder_params={"text_encoder": 4_022_468_096},
        vae_params=83_819_683,
        width=3840,
        blocks=30,
        source="known size of Tongyi-MAI/Z-Image",
    ),
    # FLUX.2: parameters counted from each component's config (Flux2Transformer2DModel, AutoencoderKLFlux2, Qwen3 4B/8B,
    # Mistral-Small-3.1-24B with its vision tower) built on torch's meta device; the [dev] transformer is 32.2 B.
    "black-forest-labs/FLUX.2-klein-base-4B": ModelSizes(
        transformer_params=3_875_544_576,
        text_encoder_params={"text_encoder": 4_022_468_096},
        vae_params=84_046_115,
        width=3072,
        blocks=25,
        source="known size of black-forest-labs/FLUX.2-klein-base-4B",
    ),
    "black-forest-labs/FLUX.2-klein-base-9B": ModelSizes(
        transformer_params=9_078_581_248,
        text_encoder_params={"text_encoder": 8_190_735_360},
        vae_params=84_046_115,
        width=4096,
        blocks=32,
        source="known size of black-forest-labs/FLUX.2-klein-base-9B",
    ),
    "black-forest-labs/FLUX.2-dev": ModelSizes(
        transformer_params=32_223_281_152,
        text_encoder_params={"text_encoder": 24_011_361_280},
        vae_params=84_046_115,
        width=6144,
        blocks=56,
        source="known size of black-forest-labs/FLUX.2-dev",
    ),
    "stabilityai/stable-diffusion-3.5-large": ModelSizes(
        transformer_params=8_056_000_000,
        text_encoder_params=_SD3_TEXT_ENCODERS,
        vae_params=83_653_863,
        width=2432,
        blocks=38,
        source="known size of stabilityai/stable-diffusion-3.5-large",
    ),
    "stabilityai/stable-diffusion-3.5-medium": ModelSizes(
        transformer_params=2_243_000_000,
        text_encoder_params=_SD3_TEXT_ENCODERS,
        vae_params=83_653_863,
        width=1536,
        blocks=24,
        source="known size of stabilityai/stable-diffusion-3.5-medium",
    ),
    "stabilityai/stable-diffusion-3-medium-diffusers": ModelSizes(
        transformer_params=2_028_328_000,
        text_encoder_params=_SD3_TEXT_ENCODERS,
        vae_params=83_653_863,
        width=1536,
        blocks=24,
        source="known size of stabilityai/stable-diffusion-3-medium-diffusers",
    ),
}


def safetensors_params(path: Path) -> int:
    """Parameters in one safetensors file, from its header alone."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    return sum(math.prod(entry["shape"]) for key, entry in header.items() if key != "__metadata__")


def component_params(folder: Path) -> int | None:
    """Parameters of one component folder (transformer/, text_encoder_2/, ...), or None without weights.

    A sharded checkpoint is read through its index; variant files (`*.fp16.safetensors`) beside the
    main weights are not counted twice.
    """
    indexes = sorted(folder.glob("*.safetensors.index.json"))
    if indexes:
        files = sorted(set(json.loads(indexes[0].read_text(encoding="utf-8"))["weight_map"].values()))
        paths = [folder / name for name in files]
    else:
        paths = [p for p in sorted(folder.glob("*.safetensors")) if p.name.count(".") == 1]
    if not paths or not all(p.is_file() for p in paths):
        return None
    return sum(safetensors_params(p) for p in paths)


def read_model_sizes(folder: Path) -> ModelSizes | None:
    """Sizes of a local diffusers folder from its safetensors headers and configs; None when incomplete."""
    folder = Path(folder)
    index_path = folder / "model_index.json"
    config_path = folder / "transformer" / "config.json"
    if not index_path.is_file() or not config_path.is_file():
        return None
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        config = json.loads(config_path.read_text(encoding="utf-8"))
        transformer = component_params(folder / "transformer")
        vae = component_params(folder / "vae") or 0
        encoders = {}
        for name, value in index.items():
            if name.startswith("text_encoder") and isinstance(value, list) and value[0] is not None:
                params = component_params(folder / name)
                if params is None:
                    return None
                encoders[name] = params
    except (OSError, ValueError, KeyError, struct.error):
        return None
    if transformer is None:
        return None
    # FLUX, SD3, Qwen-Image and Chroma name heads and blocks; Z-Image its width ("dim") and layers.
    width = config.get("num_attention_heads", 0) * config.get("attention_head_dim", 0) or config.get("dim", 0)
    blocks = config.get("num_layers", 0) + config.get("num_single_layers", 0) or config.get("n_layers", 0)
    if not width or not blocks:
        return None
    return ModelSizes(
        transformer_params=transformer,
        text_encoder_params=encoders,
        vae_params=vae,
        width=width,
        blocks=blocks,
        source=f"safetensors headers in {folder}",
    )


def exact_model_sizes(model: str) -> ModelSizes | None:
    """Sizes of `model` itself: its own files (a local folder or the hub cache), else the known table; None
    when neither knows it."""
    from glance.hub import cached_snapshot

    folder = Path(model).expanduser() if is_local_model(model) else cached_snapshot(model)
    if folder is not None:
        sizes = read_model_sizes(folder)
        if sizes is not None:
            return sizes
    return KNOWN_SIZES.get(model)


def model_sizes(model: str, family: Family) -> ModelSizes:
    """Sizes of `model`: its own files (a local folder or the hub cache), else the known table.

    An unknown hub id gets the sizes of its family's first model, and says so.
    """
    sizes = exact_model_sizes(model)
    if sizes is not None:
        return sizes
    stand_in = next((hub_id for hub_id in family.hub_ids if hub_id in KNOWN_SIZES), None)
    if stand_in is None:
        raise GlanceError(f"cannot tell how large {model} is; pass --quantize explicitly")
    sizes = KNOWN_SIZES[stand_in]
    return sizes.model_copy(update={"source": f"{sizes.source} (stand-in for {model})"})
