"""The small model that ships with glance: a FLUX-architecture pipeline that draws the shapes of
`glance.shapes` (64 px), pretrained by benchmarks/pretrain_shapes.py and committed in the package.

It is what `glance demo`, the quality benchmark and the quality tests run on: small enough for a
CPU, real enough that its images show what a Glance pair does.
"""

from __future__ import annotations

import json
from pathlib import Path

from glance.families import GlanceError
from glance.files import file_sha256

MODEL_DIR = Path(__file__).resolve().parent / "models" / "shapes-flux"
STAMP_NAME = "glance-shapes.json"  # the pretraining's arguments and every file's sha256
RESOLUTION = 64


def shipped_model(*, verify: bool = False) -> Path:
    """The shipped model's folder; with `verify`, every file is checked against the stamp's sha256."""
    try:
        stamp = json.loads((MODEL_DIR / STAMP_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise GlanceError(
            f"the small model is missing from {MODEL_DIR}; reinstall glance, or rebuild it with "
            "benchmarks/pretrain_shapes.py"
        ) from None
    if verify:
        for name, digest in stamp["files"].items():
            path = MODEL_DIR / name
            if not path.is_file() or file_sha256(path) != digest:
                raise GlanceError(f"the small model's {name} differs from its stamp; reinstall glance")
    return MODEL_DIR
