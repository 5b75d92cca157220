"""The image + caption pair: checks, and staging into a folder SimpleTuner may write into."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from glance.families import GlanceError, read_json
from glance.files import write_atomic

DEFAULT_IMAGE = Path("data/glance.png")


DEFAULT_BACKGROUND = "white"


@dataclass(frozen=True)
class ImagePair:
    image: Path
    caption_file: Path
    caption: str
    width: int
    height: int
    # The colour transparent pixels are trained on, when the image has any: SimpleTuner would drop the alpha
    # channel and train on whatever colour lies hidden under it.
    background: str | None = None

    @cached_property
    def image_bytes(self) -> bytes:
        """What is trained on: the file as it is, or a transparent image flattened onto its background (PNG)."""
        if self.background is None:
            return self.image.read_bytes()
        from io import BytesIO

        from PIL import Image

        with Image.open(self.image) as img:
            rgba = img.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, self.background)
        flat.alpha_composite(rgba)
        buffer = BytesIO()
        flat.convert("RGB").save(buffer, format="PNG")
        return buffer.getvalue()

    @property
    def staged_name(self) -> str:
        return self.image.name if self.background is None else f"{self.image.stem}.png"

    @cached_property
    def fingerprint(self) -> str:
        """Hash of the image as trained on and the caption: what the caches and the LoRAs depend on."""
        digest = hashlib.sha256(self.image_bytes)
        digest.update(b"\0" + self.caption.encode("utf-8"))
        return digest.hexdigest()


def caption_path(image: Path) -> Path:
    return image.with_suffix(".txt")


def check_pair(image: Path, min_side: int = 64, background: str = DEFAULT_BACKGROUND) -> ImagePair:
    """Everything SimpleTuner would trip over later, refused now with one line each.

    A transparent image is trained on flattened onto `background` (ImagePair.background says so).
    """
    from PIL import Image, ImageColor, UnidentifiedImageError

    image = Path(image)
    if not image.exists():
        raise GlanceError(f"image not found: {image}")
    if not image.is_file():
        raise GlanceError(f"not an image file: {image}")
    try:
        with Image.open(image) as img:  # by content, not by extension
            width, height = img.size
            img.verify()
        with Image.open(image) as img:  # verify() leaves the image unusable: open it again for its alpha
            transparent = _has_transparent_pixels(img)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise GlanceError(f"{image} is not a readable image ({type(exc).__name__})") from None
    if transparent:
        try:
            ImageColor.getrgb(background)
        except ValueError:
            raise GlanceError(f"--background {background!r} is not a colour (a name like white, or #rrggbb)") from None
    if min(width, height) < min_side:
        raise GlanceError(f"{image} is {width}x{height}; both sides must be at least {min_side} px")
    caption_file = caption_path(image)
    if not caption_file.is_file():
        raise GlanceError(f"caption not found: {caption_file} (the caption is the .txt file beside the image)")
    try:
        caption = caption_file.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise GlanceError(f"caption {caption_file} is not UTF-8 text") from None
    if not caption.strip():
        raise GlanceError(f"caption {caption_file} is empty")
    return ImagePair(image, caption_file, caption.strip(), width, height, background if transparent else None)


def _has_transparent_pixels(img) -> bool:
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        return img.convert("RGBA").getchannel("A").getextrema()[0] < 255
    return False


def stage_pair(pair: ImagePair, dataset_dir: Path) -> bool:
    """Copy the pair into `dataset_dir`, which then holds nothing else. True when it changed.

    SimpleTuner writes aspect-bucket files into its dataset folder; staging keeps the user's
    folder byte-for-byte unchanged. A changed pair empties the folder first, so no stale bucket
    file describes an image that is gone.
    """
    dataset_dir = Path(dataset_dir)
    staged_image = dataset_dir / pair.staged_name
    staged_caption = dataset_dir / f"{pair.image.stem}.txt"
    image_bytes = pair.image_bytes
    caption_bytes = pair.caption.encode("utf-8")
    if (
        staged_image.is_file()
        and staged_caption.is_file()
        and staged_image.read_bytes() == image_bytes
        and staged_caption.read_bytes() == caption_bytes
        # nothing else but SimpleTuner's own aspect-bucket .json files
        and sorted(p.name for p in dataset_dir.iterdir() if p.suffix.lower() != ".json")
        == sorted([staged_image.name, staged_caption.name])
    ):
        return False
    if dataset_dir.exists():
        shutil.rmtree(dataset_dir)
    write_atomic(staged_image, image_bytes)
    write_atomic(staged_caption, caption_bytes)
    return True


def caption_length_note(caption: str, model_folder: Path | None) -> str | None:
    """What each of the model's tokenizers keeps of a long caption, or None when every one keeps all of it.

    SimpleTuner cuts each text encoder's tokens at its maximum, silently: the rest is not trained on.
    (Captions of up to 75 bytes fit every tokenizer, so they cost no tokenizer load.)
    """
    if model_folder is None or len(caption.encode("utf-8")) <= 75:
        return None
    index_path = Path(model_folder) / "model_index.json"
    if not index_path.is_file():
        return None
    from transformers import AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()  # its "longer than the maximum" warning: said below, once
    cut = []
    for name in sorted(k for k in read_json(index_path) if k.startswith("tokenizer")):
        if not (Path(model_folder) / name).is_dir():
            continue
        tokenizer = AutoTokenizer.from_pretrained(Path(model_folder) / name)
        limit = tokenizer.model_max_length
        count = len(tokenizer(caption).input_ids)
        if limit < 1_000_000 and count > limit:  # a tokenizer without a maximum reports a huge one
            cut.append(f"{name} keeps {limit} of its {count} tokens")
    if not cut:
        return None
    return f"the caption is cut: {', '.join(cut)}; the rest is not trained on"
