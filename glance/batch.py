"""What one `glance infer` renders: every prompt x seed, numbered, and where each image goes.

Prompts come from the command line and from a prompts file; seeds from a spec like `3`, `0,5,9`
or `0-7`. Everything here is checked before a model is loaded, and nothing here imports torch.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from glance.families import GlanceError

MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit seed


class ImageJob(BaseModel):
    """One image to render: the `index`-th of the run in prompt-major order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int
    prompt: str
    seed: int
    out: Path
    base_outs: dict[int, Path] = {}  # --compare: steps -> the base model's image of the same prompt and seed


def parse_seeds(spec: str) -> list[int]:
    """`3` -> [3]; `0,5,9` -> [0, 5, 9]; `0-7` -> [0, ..., 7]; parts combine: `0-3,9`."""
    seeds: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        try:
            first, last = (int(value) for value in part.split("-", 1)) if "-" in part.lstrip("-") else (int(part),) * 2
        except ValueError:
            raise GlanceError(
                f"--seeds {spec}: {part!r} is not a seed; give a number (3), a list (0,5,9) or a range (0-7)"
            ) from None
        if last < first:
            raise GlanceError(f"--seeds {spec}: the range {part} runs backwards")
        seeds.extend(range(first, last + 1))
    for seed in seeds:
        if not 0 <= seed <= MAX_SEED:
            raise GlanceError(f"--seeds {spec}: seed {seed} is out of range (0 to {MAX_SEED})")
    repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
    if repeated:
        raise GlanceError(f"--seeds {spec}: seed {repeated[0]} is given twice (it would render the same image)")
    return seeds


def read_prompts_file(path: Path) -> list[str]:
    """One prompt per line, UTF-8; blank lines and lines starting with `#` are skipped.

    A line that is not UTF-8 or holds a control character is refused with its line number.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise GlanceError(f"--prompts {path}: {exc.strerror or exc}") from None
    data = data.removeprefix(b"\xef\xbb\xbf")  # a byte-order mark some editors write
    prompts = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8").removesuffix("\r")
        except UnicodeDecodeError as exc:
            raise GlanceError(f"{path}:{number}: not UTF-8 (byte {exc.object[exc.start]:#04x})") from None
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        control = next((c for c in text if unicodedata.category(c) == "Cc" and c != "\t"), None)
        if control is not None:
            raise GlanceError(f"{path}:{number}: the prompt holds a control character (U+{ord(control):04X})")
        prompts.append(text)
    if not prompts:
        raise GlanceError(f"--prompts {path}: no prompts in it (blank lines and # comments are skipped)")
    return prompts


def numbered_path(out: Path, number: int, count: int) -> Path:
    """glance.png -> glance-001.png: three digits at least, more when there are more images."""
    out = Path(out)
    width = max(3, len(str(count)))
    return out.with_name(f"{out.stem}-{number:0{width}d}{out.suffix}")


def base_image_path(out: Path, steps: int) -> Path:
    """Where the base model's image goes: beside the glance image, e.g. glance-base50.png."""
    out = Path(out)
    return out.with_name(f"{out.stem}-base{steps}{out.suffix}")


def sheet_path(out: Path) -> Path:
    """The --compare contact sheet: glance.png -> glance-compare.png."""
    out = Path(out)
    return out.with_name(f"{out.stem}-compare{out.suffix}")


def parse_compare(spec: str) -> list[int]:
    """`50` -> [50]; `50,10,4` -> [50, 10, 4]: the base model's step counts, in the order given."""
    try:
        steps = [int(part) for part in spec.split(",")]
    except ValueError:
        raise GlanceError(f"--compare {spec}: give step counts, e.g. 50 or 50,10") from None
    if min(steps) < 1:
        raise GlanceError(f"--compare {spec}: step counts start at 1")
    if len(set(steps)) != len(steps):
        raise GlanceError(f"--compare {spec}: a step count is given twice")
    return steps


def plan_images(out: Path, prompts: list[str], seeds: list[int], compare: list[int] | None = None) -> list[ImageJob]:
    """Every prompt x seed in prompt-major order. One image keeps `out`; several are numbered beside it."""
    pairs = [(prompt, seed) for prompt in prompts for seed in seeds]
    jobs = []
    for index, (prompt, seed) in enumerate(pairs):
        path = Path(out) if len(pairs) == 1 else numbered_path(out, index + 1, len(pairs))
        bases = {steps: base_image_path(path, steps) for steps in compare or ()}
        jobs.append(ImageJob(index=index, prompt=prompt, seed=seed, out=path, base_outs=bases))
    return jobs
