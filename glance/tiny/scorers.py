"""Tiny random CLIP and DINOv2 scorers for `glance eval`'s tests, built offline like the tiny pipelines.

Each is a transformers folder the real scorers' loaders read (config, safetensors weights, image
processor; CLIP's tokenizer is glance's tiny CLIP tokenizer, learnt here, glance/tiny/text.py).
Random weights: the scores mean nothing, the path they take is the real one.
"""

from __future__ import annotations

from pathlib import Path

from glance.files import replace_folder

IMAGE_SIZE = 32


def build_tiny_scorer(kind: str, path: Path, *, seed: int = 0) -> Path:
    """Build the tiny `kind` ("clip" or "dino") scorer at `path` (once: a finished folder is kept)."""
    import tempfile

    from glance.tiny.text import seeded

    path = Path(path)
    if (path / "config.json").is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.building."))
    model, processor = seeded(seed, _clip if kind == "clip" else _dino)
    model.save_pretrained(building, safe_serialization=True)
    processor.save_pretrained(building)
    replace_folder(building, path)
    return path


def _clip():
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPVisionConfig

    from glance.shapes import all_captions
    from glance.tiny.text import CORPUS, clip_config, clip_tokenizer

    tokenizer = clip_tokenizer((*CORPUS, *(caption.text for caption in all_captions()[:12])))
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                              image_size=IMAGE_SIZE, patch_size=8, projection_dim=32)  # fmt: skip
    config = CLIPConfig(text_config=clip_config(tokenizer).to_dict(), vision_config=vision.to_dict(), projection_dim=32)
    size = {"shortest_edge": IMAGE_SIZE}
    crop = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size=size, crop_size=crop), tokenizer=tokenizer)
    return CLIPModel(config), processor


def _dino():
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                          image_size=IMAGE_SIZE, patch_size=8)  # fmt: skip
    size = {"shortest_edge": IMAGE_SIZE}
    crop = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    processor = BitImageProcessor(size=size, crop_size=crop, do_convert_rgb=True)
    return Dinov2Model(config), processor
