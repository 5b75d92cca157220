"""The image + caption pair: checks, and staging into a folder SimpleTuner may write into."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from glance.families import GlanceError
from glance.files import write_atomic

DEFAULT_IMAGE = Path("data/glance.png")


@dataclass(frozen=True)
class ImagePair:
    image: Path
    caption_file: Path
    caption: str
    width: int
    height: int

    @cached_property
    def fingerprint(self) -> str:
        """Hash of the image bytes and the caption: what the caches and the LoRAs depend on."""
        digest = hashlib.sha256(self.image.read_bytes())
        digest.update(b"\0" + self.caption.encode("utf-8"))
        return digest.hexdigest()


def caption_path(image: Path) -> Path:
    return image.with_suffix(".txt")


def check_pair(image: Path, min_side: int = 64) -> ImagePair:
    """Everything SimpleTuner would trip over later, refused now with one line each."""
    from PIL import Image, UnidentifiedImageError

    image = Path(image)
    if not image.exists():
        raise GlanceError(f"image not found: {image}")
    if not image.is_file():
        raise GlanceError(f"not an image file: {image}")
    try:
        with Image.open(image) as img:  # by content, not by extension
            width, height = img.size
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise GlanceError(f"{image} is not a readable image ({type(exc).__name__})") from None
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
    return ImagePair(image, caption_file, caption.strip(), width, height)


def stage_pair(pair: ImagePair, dataset_dir: Path) -> bool:
    """Copy the pair into `dataset_dir`, which then holds nothing else. True when it changed.

    SimpleTuner writes aspect-bucket files into its dataset folder; staging keeps the user's
    folder byte-for-byte unchanged. A changed pair empties the folder first, so no stale bucket
    file describes an image that is gone.
    """
    dataset_dir = Path(dataset_dir)
    staged_image = dataset_dir / pair.image.name
    staged_caption = dataset_dir / f"{pair.image.stem}.txt"
    image_bytes = pair.image.read_bytes()
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
