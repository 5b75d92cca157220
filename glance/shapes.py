"""Procedural captioned images of one flat shape, and a judge that reads them back from pixels.

The data of the shipped small model (`glance.smallmodel`): its pretraining, `glance demo`, the
quality benchmark and the tests all draw and judge with this one module.

A caption names a colour, a shape, a background and, optionally, a place:
`a red circle on the left, white background`, or `a red circle, white background`, where the
shape may be anywhere. Sizes vary widely and positions jitter, so one caption stands for many
images: that openness is what few-step sampling blurs (it averages the images a caption allows)
and what a Glance pair has to fix.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from itertools import product

SIZE = 64  # pixels, square: 8x8 latents, 16 image tokens for a FLUX-style model

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (235, 215, 30)}
BACKGROUNDS = {"white": (235, 235, 235), "black": (20, 20, 20), "gray": (128, 128, 128)}
SHAPES = ("circle", "square", "triangle")
PLACES = ("on the left", "on the right", "at the top", "at the bottom", "in the centre")

# Where a named place puts the centre of the shape's bounding box, as fractions of the side.
ANCHORS = {
    "on the left": (0.25, 0.5),
    "on the right": (0.75, 0.5),
    "at the top": (0.5, 0.25),
    "at the bottom": (0.5, 0.75),
    "in the centre": (0.5, 0.5),
}
HALF_SIZE = (0.10, 0.19)  # half the side of the bounding box, as fractions of the image side
PLACE_JITTER = 0.05  # of the side, around a named place's anchor
TINT_JITTER = 12  # per channel, on shape and background colours


@dataclass(frozen=True, order=True)
class Caption:
    colour: str
    shape: str
    background: str
    place: str | None = None  # None: the shape may be anywhere

    @property
    def text(self) -> str:
        where = f" {self.place}" if self.place else ""
        return f"a {self.colour} {self.shape}{where}, {self.background} background"

    @classmethod
    def parse(cls, text: str) -> Caption:
        """The caption `text` names; ValueError for text that is not one of this dataset's captions."""
        for caption in all_captions():
            if caption.text == text.strip():
                return caption
        raise ValueError(f"not a caption of the shapes dataset: {text!r}")


def all_captions() -> list[Caption]:
    """Every caption: 4 colours x 3 shapes x 3 backgrounds x (5 places + anywhere) = 216."""
    return [
        Caption(colour, shape, background, place)
        for colour, shape, background, place in product(COLOURS, SHAPES, BACKGROUNDS, (*PLACES, None))
    ]


def is_held_out(caption: Caption) -> bool:
    """A fixed eighth of the combinations, never seen in pretraining: every word is, in other captions."""
    c, s, b = (
        list(COLOURS).index(caption.colour),
        SHAPES.index(caption.shape),
        list(BACKGROUNDS).index(caption.background),
    )
    p = PLACES.index(caption.place) if caption.place else len(PLACES)
    return (c + 2 * s + 3 * b + 5 * p) % 8 == 3


def training_captions() -> list[Caption]:
    return [caption for caption in all_captions() if not is_held_out(caption)]


def held_out_captions() -> list[Caption]:
    return [caption for caption in all_captions() if is_held_out(caption)]


def draw(caption: Caption, seed: int, size: int = SIZE):
    """The image of `caption` for `seed` (a PIL RGB image); the same seed always draws the same image."""
    from PIL import Image, ImageDraw

    rng = random.Random(f"{caption.text}|{seed}")

    def tint(rgb):
        return tuple(min(255, max(0, value + rng.randint(-TINT_JITTER, TINT_JITTER))) for value in rgb)

    half = rng.uniform(*HALF_SIZE) * size
    if caption.place:
        ax, ay = ANCHORS[caption.place]
        cx = (ax + rng.uniform(-PLACE_JITTER, PLACE_JITTER)) * size
        cy = (ay + rng.uniform(-PLACE_JITTER, PLACE_JITTER)) * size
    else:
        cx, cy = rng.uniform(half + 1, size - half - 1), rng.uniform(half + 1, size - half - 1)
    image = Image.new("RGB", (size, size), tint(BACKGROUNDS[caption.background]))
    box = (cx - half, cy - half, cx + half, cy + half)
    fill = tint(COLOURS[caption.colour])
    pen = ImageDraw.Draw(image)
    if caption.shape == "circle":
        pen.ellipse(box, fill=fill)
    elif caption.shape == "square":
        pen.rectangle(box, fill=fill)
    else:  # upright, so the bounding box centre is the anchor as for the other shapes
        pen.polygon([(cx, cy - half), (cx + half, cy + half), (cx - half, cy + half)], fill=fill)
    return image


def training_sample(index: int, *, anywhere_share: float = 0.35) -> tuple[Caption, object]:
    """The `index`-th pretraining sample: a training caption (captions without a place at
    `anywhere_share`, more than their 1/6 of the captions, since they are the open ones) and its image."""
    rng = random.Random(index)
    captions = training_captions()
    open_ones = [caption for caption in captions if caption.place is None]
    placed = [caption for caption in captions if caption.place is not None]
    caption = rng.choice(open_ones if rng.random() < anywhere_share else placed)
    return caption, draw(caption, seed=index)


# The judge


@dataclass
class Verdict:
    """What the judge read from an image, and whether it matches the caption."""

    seen: dict[str, str | None]  # background, colour, shape, place as read from the pixels
    checks: dict[str, bool] = field(default_factory=dict)  # per attribute the caption names
    crispness: float = 0.0  # 1.0: hard edges only; lower: pixels between shape and background

    @property
    def passed(self) -> bool:
        return all(self.checks.values())


MIN_SHAPE_PIXELS = 12


def judge(image, caption: Caption) -> Verdict:
    """Read background, colour, shape and place from the pixels of `image` and check them against `caption`.

    Background: the median of the border. The shape: the pixels far from the background. Colour:
    their median, to the nearest named colour. Place: the nearest anchor to the centre of their
    bounding box. Shape: how much of that box they fill and whether they widen downwards (a
    triangle). Crispness: the share of the shape's pixels that are not between shape and
    background colour (blur and averaged images make many such pixels).
    """
    import numpy as np

    pixels = np.asarray(image.convert("RGB").resize((SIZE, SIZE)), dtype=np.float32)
    border = np.concatenate([pixels[:2].reshape(-1, 3), pixels[-2:].reshape(-1, 3),
                             pixels[:, :2].reshape(-1, 3), pixels[:, -2:].reshape(-1, 3)])  # fmt: skip
    background = np.median(border, axis=0)
    seen: dict[str, str | None] = {"background": _nearest(background, BACKGROUNDS)}
    distance = np.linalg.norm(pixels - background, axis=2)
    mask = distance > 70.0  # half the smallest shape/background contrast (green on gray: ~140)
    if mask.sum() < MIN_SHAPE_PIXELS:
        seen.update(colour=None, shape=None, place=None)
        return _verdict(seen, caption, crispness=0.0)

    foreground = np.median(pixels[mask], axis=0)
    seen["colour"] = _nearest(foreground, COLOURS)
    rows = np.flatnonzero(mask.sum(axis=1) >= 2)
    cols = np.flatnonzero(mask.sum(axis=0) >= 2)
    if len(rows) < 3 or len(cols) < 3:
        seen.update(shape=None, place=None)
        return _verdict(seen, caption, crispness=0.0)
    top, bottom, left, right = rows[0], rows[-1], cols[0], cols[-1]
    box = mask[top : bottom + 1, left : right + 1]
    fill = box.mean()
    quarter = max(1, box.shape[0] // 4)
    top_width, bottom_width = box[:quarter].sum(axis=1).mean(), box[-quarter:].sum(axis=1).mean()
    if bottom_width > 1.6 * max(top_width, 1.0):
        seen["shape"] = "triangle"
    elif fill > 0.88:
        seen["shape"] = "square"
    else:
        seen["shape"] = "circle"
    centre = ((left + right + 1) / 2 / SIZE, (top + bottom + 1) / 2 / SIZE)
    seen["place"] = min(
        ANCHORS, key=lambda place: (ANCHORS[place][0] - centre[0]) ** 2 + (ANCHORS[place][1] - centre[1]) ** 2
    )

    contrast = float(np.linalg.norm(foreground - background))
    to_foreground = np.linalg.norm(pixels - foreground, axis=2)
    between = (distance > 0.25 * contrast) & (to_foreground > 0.25 * contrast)
    crispness = 1.0 - between.sum() / max(1, (mask | between).sum())
    return _verdict(seen, caption, crispness=float(crispness))


def _verdict(seen: dict, caption: Caption, crispness: float) -> Verdict:
    checks = {
        "background": seen["background"] == caption.background,
        "colour": seen["colour"] == caption.colour,
        "shape": seen["shape"] == caption.shape,
    }
    if caption.place is not None:
        checks["place"] = seen["place"] == caption.place
    return Verdict(seen=seen, checks=checks, crispness=crispness)


def _nearest(rgb, named: dict[str, tuple[int, int, int]]) -> str:
    return min(named, key=lambda name: sum((float(a) - b) ** 2 for a, b in zip(rgb, named[name], strict=True)))


def summarize(verdicts: list[Verdict]) -> dict:
    """Share of images that pass all checks and each check (over the images that have it), mean crispness."""
    summary = {"images": len(verdicts), "all": _share([v.passed for v in verdicts])}
    for check in ("background", "colour", "shape", "place"):
        outcomes = [v.checks[check] for v in verdicts if check in v.checks]
        summary[check] = _share(outcomes) if outcomes else None
    summary["crispness"] = round(sum(v.crispness for v in verdicts) / max(1, len(verdicts)), 4)
    return summary


def _share(outcomes: list[bool]) -> float:
    return round(sum(outcomes) / max(1, len(outcomes)), 4)


def write_pair(folder, caption: Caption, seed: int) -> object:
    """Write `caption`'s image for `seed` as `glance.png` and the caption as `glance.txt`; return the image path."""
    from io import BytesIO
    from pathlib import Path

    from glance.files import needs_writing, write_atomic

    folder = Path(folder)
    buffer = BytesIO()
    draw(caption, seed).save(buffer, format="PNG")
    image_path = folder / "glance.png"
    for target, payload in ((image_path, buffer.getvalue()), (folder / "glance.txt", caption.text + "\n")):
        if needs_writing(target, payload, force=False):
            write_atomic(target, payload)
    return image_path
