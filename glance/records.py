"""What every PNG glance writes carries: its record, an A1111 parameters line, and its ComfyUI workflow.

Three text chunks: "glance" (the full record as JSON: prompt, seed, model, guidance, the sigmas and
adapter of every step as they ran, the LoRAs), "parameters" (the line A1111 / ComfyUI tools show)
and "prompt" (the ComfyUI workflow of the image, glance/comfyui.py), so the PNG opens in ComfyUI.

PIL is imported inside the functions.
"""

from __future__ import annotations

import json
from io import BytesIO
from pathlib import Path

from glance.comfyui import PNG_PROMPT_KEY, png_prompt
from glance.families import GlanceError
from glance.sampler import StepRecord

PNG_PARAMETERS_KEY = "parameters"  # the human-readable line A1111 / ComfyUI tools show
PNG_GLANCE_KEY = "glance"  # the full record as JSON


def trace_summary(trace: list[StepRecord], image) -> dict:
    """The record's part that says what ran: the image size, and each step's sigmas and adapters."""
    return {
        "width": image.width,
        "height": image.height,
        "sigmas": [record.sigma for record in trace],
        "steps": [
            {"step": r.step, "sigma": r.sigma, "sigma_next": r.sigma_next, "adapters": list(r.adapters)} for r in trace
        ],
    }


def png_bytes(image, summary: dict) -> bytes:
    """The image as PNG with its record, its parameters line and its ComfyUI workflow."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(PNG_PARAMETERS_KEY, parameters_line(summary))  # tEXt, or iTXt when not Latin-1
    info.add_text(PNG_GLANCE_KEY, json.dumps(summary, sort_keys=True))
    info.add_text(PNG_PROMPT_KEY, png_prompt(summary))  # the image's ComfyUI workflow: the PNG opens in ComfyUI
    buffer = BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def parameters_line(summary: dict) -> str:
    """The A1111-style text ("prompt / Negative prompt: ... / Steps: ..., Seed: ...") image tools display."""

    def quote(value) -> str:  # A1111 quotes values that contain its separators
        text = str(value)
        return json.dumps(text, ensure_ascii=False) if any(c in text for c in ',:\n"') else text

    steps = summary["steps"]
    if summary["kind"] == "glance":
        slow = sum(1 for step in steps if step["adapters"] == ["slow"])
        schedule = f"glance ({slow} slow + {len(steps) - slow} fast LoRA steps)"
    elif summary["kind"] == "schedule":
        schedule = "glance's trained sigmas, no LoRA"
    else:
        schedule = "base model default"
    fields = {
        "Steps": len(steps),
        "Sampler": "Euler (flow matching)",
        "Schedule type": schedule,
        "CFG scale": summary["guidance"],
        "True CFG scale": summary["true_cfg"],
        "Seed": summary["seed"],
        "Size": f"{summary['width']}x{summary['height']}",
        "Model": summary["model"],
        "Version": f"glance {summary['glance_version']}",
    }
    lines = [summary["prompt"]]
    if summary["negative_prompt"] is not None:
        lines.append(f"Negative prompt: {summary['negative_prompt']}")
    lines.append(", ".join(f"{key}: {quote(value)}" for key, value in fields.items() if value is not None))
    return "\n".join(lines)


def read_png_parameters(path: Path) -> dict:
    """The record `glance infer` wrote into a PNG (its "glance" text chunk)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            text = getattr(image, "text", {}).get(PNG_GLANCE_KEY)
    except OSError as exc:
        raise GlanceError(f"cannot read {path}: {exc.strerror or exc}") from None
    if text is None:
        raise GlanceError(f"{path} carries no glance parameters")
    return json.loads(text)
