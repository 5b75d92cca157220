"""A glance LoRA as ComfyUI loads it: the same tensors, every module mapped, and the trained alpha as tensors.

ComfyUI reads a LoRA's strength from a tensor `<module key>.alpha` (comfy/lora.py, load_lora:
`alpha = lora[alpha_name].item()`) and scales by alpha / rank, or by 1.0 when that tensor is missing
(comfy/weight_adapter/lora.py, LoRAAdapter.calculate_weight). SimpleTuner's files keep alpha only in
their header (or beside them, in simpletuner_config.json), so ComfyUI would run a glance LoRA at
rank / alpha of its trained strength (a quarter, with alpha = 4 x rank) without a word. The export
adds one alpha tensor per module; the keys stay diffusers' `transformer.<module>.lora_A/B.weight`,
which ComfyUI's key map takes for FLUX, SD3 and Qwen-Image (see `ComfyUISetup.lora_modules`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from glance.families import GlanceError
from glance.loras import read_lora_file, training_alpha  # the LoRA reader glance infer loads with
from glance.manifest import WEIGHTS_NAME

ALPHA_SUFFIX = ".alpha"
# diffusers' header key for the adapter config (diffusers.loaders.lora_base); named here so that reading it
# does not import diffusers (and transformers) into `glance push`.
LORA_ADAPTER_METADATA_KEY = "lora_adapter_metadata"


@dataclass(frozen=True)
class ExportedLora:
    """One phase's LoRA, read and checked: its tensors by key, rank, the alpha it trained with."""

    source: Path
    tensors: dict  # key -> tensor, as in the file
    metadata: dict[str, str]  # the file's safetensors header metadata
    modules: list[str]  # diffusers module names, without "transformer."
    rank: int
    alpha: float
    alpha_from: str  # where the alpha was read: "file metadata", "simpletuner_config.json", or rank assumed


def read_lora(phase: str, folder: Path) -> ExportedLora:
    """The LoRA glance train wrote for `phase`, with the alpha `glance infer` would sample it at."""
    from safetensors import safe_open

    path = Path(folder) / WEIGHTS_NAME
    if not path.is_file():
        raise GlanceError(f"the {phase} LoRA is missing: {path}; run `glance train` again")
    lora = read_lora_file(phase, Path(folder))
    rank = next(iter(lora.weights.values()))["A"].shape[0]
    if any(pair["A"].shape[0] != rank for pair in lora.weights.values()):
        raise GlanceError(f"{path}: its modules have different ranks; ComfyUI's alpha / rank would differ per module")
    with safe_open(path, "pt") as handle:
        metadata = handle.metadata() or {}
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    alpha, alpha_from = lora.alpha, lora.alpha_from
    if alpha is None:
        alpha, alpha_from = _metadata_alpha(path, metadata, rank)
    return ExportedLora(path, tensors, metadata, sorted(lora.weights), rank, float(alpha), alpha_from)


def _metadata_alpha(path: Path, metadata: dict, rank: int) -> tuple[float, str]:
    """lora_alpha from diffusers' adapter metadata (the header glance train writes), else rank as diffusers assumes."""
    raw = metadata.get(LORA_ADAPTER_METADATA_KEY)
    if raw is None:
        alpha, source = training_alpha(path, rank)  # no metadata: simpletuner_config.json, else rank
        return (alpha if alpha is not None else float(rank)), source
    try:
        config = json.loads(raw)
    except ValueError:
        raise GlanceError(f"{path}: its {LORA_ADAPTER_METADATA_KEY} header is not JSON") from None
    if config.get("transformer.alpha_pattern") or config.get("transformer.rank_pattern"):
        raise GlanceError(f"{path}: per-module alphas or ranks (alpha_pattern / rank_pattern) are not supported")
    if config.get("transformer.r", rank) != rank:
        raise GlanceError(f"{path}: its header says rank {config['transformer.r']}, its tensors have rank {rank}")
    return float(config.get("transformer.lora_alpha", rank)), "file metadata"


def check_comfyui_keys(lora: ExportedLora, family: str, patterns: tuple[str, ...]) -> None:
    """Refuse a module ComfyUI's key map would skip: it would load the rest and only log a warning."""
    mapped = re.compile("|".join(f"(?:{pattern})" for pattern in patterns))
    skipped = [module for module in lora.modules if not mapped.fullmatch(module)]
    if skipped:
        shown = ", ".join(skipped[:3]) + (f" and {len(skipped) - 3} more" if len(skipped) > 3 else "")
        raise GlanceError(
            f"{lora.source}: ComfyUI's {family} LoRA key map (comfy/lora.py) has no entry for {shown}; "
            "ComfyUI would skip those layers"
        )


def comfyui_lora_bytes(lora: ExportedLora, header: dict[str, str]) -> bytes:
    """The safetensors file: the LoRA's own tensors, untouched, plus `transformer.<module>.alpha` per module.

    The header keeps the source file's metadata with `header` on top (glance's: rank, alpha, lists, model).
    """
    import torch
    from safetensors.torch import save

    tensors = dict(lora.tensors)
    for module in lora.modules:
        key = f"transformer.{module}{ALPHA_SUFFIX}"
        if key in tensors:
            raise GlanceError(f"{lora.source} already has an alpha tensor {key}")
        # A 0-d float32 tensor, as kohya-style files carry it; ComfyUI reads it with .item().
        tensors[key] = torch.tensor(lora.alpha, dtype=torch.float32)
    return _sorted_header(save(tensors, metadata={**lora.metadata, "format": "pt", **header}))


def _sorted_header(raw: bytes) -> bytes:
    """The same file with its JSON header in sorted key order.

    safetensors writes the metadata from a hash map, in an order that changes from run to run; sorted,
    an export of the same run gives the same bytes, and re-running it is a no-op.
    """
    import struct

    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    encoded = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # tensor data stays 8-byte aligned, as safetensors writes it
    return struct.pack("<Q", len(encoded)) + encoded + raw[8 + length :]
