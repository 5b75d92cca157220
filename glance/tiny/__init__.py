"""Tiny, randomly initialised diffusers pipelines that build entirely offline.

One implementation for the demo, the tests and the benchmarks. This module builds a model folder
(once, atomically) and makes what the tests train and sample with: a synthetic training pair and
random LoRAs. Each family's pipeline is built by its own module here (glance/tiny/<family>.py, as
diffusers keeps one pipeline per file); the tokenizers, made on a few sentences instead of being
downloaded, and the text encoders are glance/tiny/text.py's. Adding a family adds its module and
one line to BUILDERS.

Scales:
  "tiny"   a few hundred kB; samples in well under a second on CPU (all families).
  "bench"  FLUX only: the tiny text encoders, a VAE that downsamples 8x with 16 latent channels like
           the real one (1024 px -> 4096 tokens), and a transformer of 576M parameters saved in
           bfloat16 (1.15 GB), so sampling time is the transformer's, as with the real model.
           Builds in ~20 s on 2 CPU cores, peaking near 3.5 GB of RAM.
  "full"   FLUX only: the bench model with a FLUX.1-dev-sized transformer (19 + 38 blocks of width 3072,
           11.89 B parameters, 24 GB in bfloat16) for GPU memory checks. Built directly in bfloat16 on
           the GPU when there is one (seconds, plus writing 24 GB); on a CPU it needs ~30 GB of RAM.

Heavy imports (torch, diffusers, transformers, tokenizers) happen inside the functions.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from io import BytesIO
from pathlib import Path

from glance import __version__
from glance.families import GlanceError, get_family
from glance.files import needs_writing, replace_folder, write_atomic
from glance.tiny.chroma import chroma_pipeline
from glance.tiny.flux import flux_pipeline
from glance.tiny.flux2 import flux2_dev_pipeline, flux2_klein_pipeline
from glance.tiny.qwen_image import qwen_image_pipeline
from glance.tiny.sd3 import sd3_pipeline
from glance.tiny.z_image import z_image_pipeline

SCALES = ("tiny", "bench", "full")
STAMP_NAME = "glance-tiny.json"  # written last: a folder without it is not a finished build
# family -> builder(seed, scale) of its tiny diffusers pipeline
BUILDERS = {
    "flux": flux_pipeline,
    "sd3": sd3_pipeline,
    "qwen_image": qwen_image_pipeline,
    "chroma": chroma_pipeline,
    "z_image": z_image_pipeline,
    "flux2": flux2_klein_pipeline,  # FLUX.2 [klein] base
}
# Models of a family beyond its default one: name -> (family, builder)
VARIANTS = {"flux2-dev": ("flux2", flux2_dev_pipeline)}


def build_tiny_model(family: str, path: Path, *, seed: int = 0, scale: str = "tiny") -> Path:
    """Build a complete diffusers pipeline folder for `family` (a key of BUILDERS or VARIANTS) at `path`.

    Returns at once when `path` already holds a finished build with the same arguments. The build
    happens in a temporary folder beside `path` that is renamed into place when complete, so an
    interrupted build is never mistaken for a finished one.
    """
    name = family if family in VARIANTS else get_family(family).name
    if scale not in SCALES:
        raise GlanceError(f"unknown tiny model scale {scale!r}; known scales: {', '.join(SCALES)}")
    if scale != "tiny" and name != "flux":
        raise GlanceError(f"the {scale} scale is built for the flux family only")
    path = Path(path)
    stamp = {"family": name, "seed": seed, "scale": scale, "glance_version": __version__}
    existing = _read_stamp(path)
    if existing == stamp:
        return path
    if existing is None and path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise GlanceError(f"{path} exists and is not a tiny model built by glance; choose another folder")

    path.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.building."))
    try:
        pipeline = _build_pipeline(name, seed, scale)
        pipeline.save_pretrained(building, safe_serialization=True)
        (building / STAMP_NAME).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
        replace_folder(building, path)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return path


def write_sample_pair(folder: Path, size: int = 128) -> Path:
    """Write a synthetic training pair, `glance.png` and its caption `glance.txt`; return the image path.

    The image is deterministic and has structure a LoRA can learn (a gradient, a disc, a square).
    """
    from PIL import Image, ImageDraw

    folder = Path(folder)
    image = Image.new("RGB", (size, size))
    pixels = image.load()
    for y in range(size):
        for x in range(size):
            pixels[x, y] = (200 + 55 * x // size, 120 + 80 * y // size, 60 + 40 * (x + y) // (2 * size))
    draw = ImageDraw.Draw(image)
    draw.ellipse((size // 8, size // 8, size // 2, size // 2), fill=(210, 30, 40))
    draw.rectangle((size // 2, size // 2, size - size // 8, size - size // 8), fill=(30, 60, 200))

    buffer = BytesIO()
    image.save(buffer, format="PNG")
    image_path = folder / "glance.png"
    caption_path = folder / "glance.txt"
    caption = "a red circle and a blue square on a warm gradient\n"
    for target, payload in ((image_path, buffer.getvalue()), (caption_path, caption)):
        if needs_writing(target, payload, force=False):
            write_atomic(target, payload)
    return image_path


LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # the attention projections, in every family


def write_random_lora(
    folder: Path, transformer, family: str, *, seed: int, rank: int = 4, with_metadata: bool = True
) -> Path:
    """Give `transformer` a LoRA with random non-zero weights and save it the way SimpleTuner does.

    Keys are `transformer.<module>.lora_A.weight` / `lora_B.weight`, alpha is 4 x rank (as glance
    trains), saved through the pipeline's `save_lora_weights`; `with_metadata=False` leaves out the
    adapter config, as SimpleTuner 4.10.1's final save does. The same seed gives the same LoRA.
    """
    import diffusers
    import torch
    from diffusers.training_utils import _collate_lora_metadata
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    config = LoraConfig(r=rank, lora_alpha=4 * rank, init_lora_weights="gaussian", target_modules=list(LORA_TARGETS))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer.add_adapter(config)
        for name, parameter in transformer.named_parameters():
            if ".lora_B." in name:  # peft starts lora_B at zero: a LoRA without effect
                torch.nn.init.normal_(parameter, std=0.5)
    pipeline_class = getattr(diffusers, get_family(family).pipeline_class)
    metadata = _collate_lora_metadata({"transformer": transformer}) if with_metadata else {}
    pipeline_class.save_lora_weights(
        folder, transformer_lora_layers=get_peft_model_state_dict(transformer), safe_serialization=True, **metadata
    )
    return Path(folder)


def load_transformer(model: Path):
    from diffusers import AutoModel

    return AutoModel.from_pretrained(str(model), subfolder="transformer", use_safetensors=True)


def _read_stamp(path: Path) -> dict | None:
    try:
        return json.loads((path / STAMP_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _build_pipeline(family: str, seed: int, scale: str):
    import torch

    # Seed every component the same way diffusers' tests do, without disturbing the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        builder = VARIANTS[family][1] if family in VARIANTS else BUILDERS[family]
        return builder(seed, scale)
