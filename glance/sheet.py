"""The --compare contact sheet: one row per prompt x seed, the base model's columns (one per step
count, in the order given), glance last.

Each tile is labelled with what made it (steps, seconds); the seed and prompt sit under the row. Small
images are scaled up by a whole factor (pixels stay sharp), large ones down to a readable tile. The
sheet's PNG carries its layout (tile boxes and source images) as JSON under the "glance-sheet" key.

PIL is imported inside the functions.
"""

from __future__ import annotations

import json
import math
from io import BytesIO
from pathlib import Path

from glance.files import write_atomic

PNG_SHEET_KEY = "glance-sheet"
MIN_TILE = 256  # px, the shorter way a small image is scaled up to (by a whole factor)
MAX_TILE = 512  # px, the longer side a large image is scaled down to
MARGIN = 16
GAP = 12  # between the tiles of a row
FONT_SIZE = 16
TITLE_SIZE = 20
LINE = 22  # px per line of text
PROMPT_LINES = 3  # at most, then "..."
BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)
MUTED = (100, 100, 100)
RULE = (220, 220, 220)


def tile_size(width: int, height: int) -> tuple[int, int]:
    """The size an image of `width` x `height` takes on the sheet."""
    longest = max(width, height)
    if longest > MAX_TILE:
        factor = MAX_TILE / longest
        return max(1, round(width * factor)), max(1, round(height * factor))
    factor = max(1, math.ceil(MIN_TILE / min(width, height)))
    while factor > 1 and longest * factor > MAX_TILE:
        factor -= 1
    return width * factor, height * factor


def write_compare_sheet(
    images: list, path: Path, notes: dict[int, str] | None = None, titles: list[str] | None = None
) -> dict:
    """Write the sheet for `images` (ImageResults with their `bases`) to `path`; returns its layout.

    `notes` adds a line under a column's title (by column index), e.g. a judge's score; `titles`
    names the columns (`glance eval`'s) instead of "base model, N steps" ... "glance".
    """
    sheet, layout = compose_sheet(images, notes or {}, titles)
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(PNG_SHEET_KEY, json.dumps(layout, sort_keys=True))
    buffer = BytesIO()
    sheet.save(buffer, format="PNG", pnginfo=info)
    write_atomic(path, buffer.getvalue())
    return layout


def compose_sheet(images: list, notes: dict[int, str] | None = None, names: list[str] | None = None):
    """(the sheet as a PIL image, its layout)."""
    from PIL import Image, ImageDraw

    notes = notes or {}
    first = images[0]
    with Image.open(first.image) as probe:
        tile_w, tile_h = tile_size(*probe.size)
    font, title_font = _font(FONT_SIZE), _font(TITLE_SIZE)
    columns = len(first.bases) + 1
    row_w = columns * tile_w + (columns - 1) * GAP
    width = row_w + 2 * MARGIN

    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    prompts = [_wrap(measure, f"{r.image.name}, seed {r.seed}: {r.prompt}", font, row_w) for r in images]
    header_h = MARGIN + LINE * (2 if notes else 1) + 8
    label_h = LINE + 4
    rows_h = [label_h + tile_h + 6 + LINE * len(lines) + MARGIN for lines in prompts]
    height = header_h + sum(rows_h) + MARGIN

    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    slow = sum(1 for step in first.summary["steps"] if step["adapters"] == ["slow"])
    fast = len(first.summary["steps"]) - slow
    titles = [f"base model, {len(base.summary['steps'])} steps" for base in first.bases]
    titles.append(f"glance, {slow} slow + {fast} fast steps")
    if names is not None:
        titles = list(names)
    for column, title in enumerate(titles):
        left = MARGIN + column * (tile_w + GAP)
        draw.text((left, MARGIN), _cut(draw, title, title_font, tile_w), font=title_font, fill=TEXT)
        if column in notes:
            draw.text((left, MARGIN + LINE), _cut(draw, notes[column], font, tile_w), font=font, fill=MUTED)

    layout = {"tile": [tile_w, tile_h], "rows": len(images), "columns": columns, "tiles": []}
    top = header_h
    for row, (result, lines, row_h) in enumerate(zip(images, prompts, rows_h, strict=True)):
        draw.line([(MARGIN, top - 4), (width - MARGIN, top - 4)], fill=RULE, width=1)
        shown_images = [(base, "base") for base in result.bases] + [(result, "glance")]
        if names is not None:
            shown_images = [(shown, names[column]) for column, (shown, _) in enumerate(shown_images)]
        for column, (shown, name) in enumerate(shown_images):
            left = MARGIN + column * (tile_w + GAP)
            label = f"{len(shown.summary['steps'])} steps · {shown.seconds:.1f} s"
            if names is None:  # named columns carry their name in the title
                label = f"{name} · {label}"
            draw.text((left, top), label, font=font, fill=MUTED)
            with Image.open(shown.image) as picture:
                tile = _fit(picture.convert("RGB"), tile_w, tile_h)
            box = [left, top + label_h, left + tile_w, top + label_h + tile_h]
            sheet.paste(tile, (box[0], box[1]))
            layout["tiles"].append({"row": row, "column": column, "box": box, "image": str(shown.image)})
        text_top = top + label_h + tile_h + 6
        for number, line in enumerate(lines):
            draw.text((MARGIN, text_top + number * LINE), line, font=font, fill=TEXT)
        top += row_h
    return sheet, layout


def read_sheet_layout(path: Path) -> dict:
    from PIL import Image

    with Image.open(path) as sheet:
        return json.loads(sheet.text[PNG_SHEET_KEY])


def _fit(picture, tile_w: int, tile_h: int):
    from PIL import Image

    if picture.size == (tile_w, tile_h):
        return picture
    upscale = tile_w >= picture.width
    return picture.resize((tile_w, tile_h), Image.Resampling.NEAREST if upscale else Image.Resampling.LANCZOS)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # a scalable font where Pillow has FreeType
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _wrap(draw, text: str, font, width: int) -> list[str]:
    """`text` in lines that fit `width`, at most PROMPT_LINES (the last ending in "..." when cut)."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        if draw.textlength(candidate, font=font) <= width or not current:
            current = candidate
        else:
            lines.append(current)
            current = word
    lines.append(current)
    if len(lines) > PROMPT_LINES:
        last = lines[PROMPT_LINES - 1]
        while last and draw.textlength(last + " ...", font=font) > width:
            last = last[:-1]
        lines = [*lines[: PROMPT_LINES - 1], last + " ..."]
    # a single word wider than the row: cut it
    return [line if draw.textlength(line, font=font) <= width else _cut(draw, line, font, width) for line in lines]


def _cut(draw, line: str, font, width: int) -> str:
    if draw.textlength(line, font=font) <= width:
        return line
    while line and draw.textlength(line + "...", font=font) > width:
        line = line[:-1]
    return line + "..."
