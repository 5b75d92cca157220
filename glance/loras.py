"""The LoRA files glance samples with: read and checked before the model is touched, then loaded as named adapters.

A file must be a diffusers-format transformer LoRA (`transformer.<layer>.lora_A/B.weight`) whose
every layer fits the model; once loaded, every layer is compared with the file. The alpha it trained
with comes from the file's metadata, else from SimpleTuner's config beside it.

torch, diffusers, peft and safetensors are imported inside the functions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from glance.families import GlanceError, read_json
from glance.files import file_sha256
from glance.manifest import WEIGHTS_NAME
from glance.memory.pipeline_quantization import is_quantized

SIMPLETUNER_CONFIG_NAME = "simpletuner_config.json"  # SimpleTuner writes it beside the LoRA it trains
_LORA_KEY = re.compile(r"^transformer\.(?P<module>.+)\.lora_(?P<part>[AB])\.weight$")


@dataclass
class LoraFile:
    """A diffusers-format transformer LoRA, read and checked before the model is touched."""

    folder: Path
    weights: dict  # module name -> {"A": tensor, "B": tensor}
    alpha: float | None  # the training alpha when the file's metadata lacks it (diffusers then assumes rank)
    alpha_from: str

    @property
    def file(self) -> Path:
        return self.folder / WEIGHTS_NAME

    @cached_property
    def sha256(self) -> str:
        """What identifies the LoRA wherever its run folder is copied or moved (the PNG records carry it)."""
        return file_sha256(self.file)

    def check_fits(self, transformer, model: str) -> None:
        """Every LoRA layer must sit on a layer of this transformer with the same in/out features.

        Checked before loading: diffusers only warns about keys it cannot place, and for FLUX it
        would even widen the model's layers to fit a LoRA made for a bigger one.
        """
        for module_name, pair in self.weights.items():
            try:
                layer = transformer.get_submodule(module_name)
            except AttributeError:
                raise GlanceError(
                    f"the LoRA {self.file} does not fit {model}: the transformer has no layer {module_name}"
                ) from None
            weight = getattr(layer, "weight", None)
            lora_in, lora_out = pair["A"].shape[1], pair["B"].shape[0]
            if (
                weight is None
                or weight.ndim != pair["A"].ndim
                or (weight.shape[1], weight.shape[0]) != (lora_in, lora_out)
            ):
                have = "no weight" if weight is None else f"{weight.shape[1]} -> {weight.shape[0]} features"
                raise GlanceError(
                    f"the LoRA {self.file} does not fit {model}: {module_name} has {have}, "
                    f"the LoRA {lora_in} -> {lora_out} (made for another model?)"
                )

    def load_into(self, pipe, adapter_name: str) -> float:
        """Load as a named adapter and check every layer received exactly the file's weights.

        Returns the adapter weight that makes its scale the trained alpha / rank.
        """
        import warnings

        from diffusers.utils import logging as diffusers_logging
        from peft.tuners.tuners_utils import BaseTunerLayer

        # Every layer is checked below, so diffusers' notice that the text encoders got no LoRA keys
        # and peft's that a second adapter joins the first are expected: keep them off the console.
        verbosity = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity_error()
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
                if is_quantized(pipe.transformer):  # diffusers' FLUX loader cannot read a quanto model's state dict
                    pipe.transformer.load_lora_adapter(
                        str(self.folder),
                        weight_name=WEIGHTS_NAME,
                        adapter_name=adapter_name,
                        prefix="transformer",
                        use_safetensors=True,
                    )
                else:
                    pipe.load_lora_weights(
                        str(self.folder), weight_name=WEIGHTS_NAME, adapter_name=adapter_name, use_safetensors=True
                    )
        finally:
            diffusers_logging.set_verbosity(verbosity)
        for module_name, pair in self.weights.items():
            layer = pipe.transformer.get_submodule(module_name)
            if not isinstance(layer, BaseTunerLayer) or adapter_name not in layer.lora_A:
                raise GlanceError(f"diffusers did not load {module_name} of the LoRA {self.file}")
            for part, loaded in (("A", layer.lora_A[adapter_name].weight), ("B", layer.lora_B[adapter_name].weight)):
                if not loaded.detach().equal(pair[part].to(device=loaded.device, dtype=loaded.dtype)):
                    raise GlanceError(f"diffusers loaded other weights than {self.file} holds for {module_name}")
        if self.alpha is None:
            return 1.0
        # Without the metadata diffusers took alpha = rank; set_adapters multiplies the scale by this weight.
        first = pipe.transformer.get_submodule(next(iter(self.weights)))
        return self.alpha / first.lora_alpha[adapter_name]

    def describe(self, transformer, adapter_name: str) -> dict:
        """Path, file hash, rank, alpha (and where it was read) and the scale the adapter ran with."""
        layer = transformer.get_submodule(next(iter(self.weights)))
        return {
            "path": str(self.folder),
            "sha256": self.sha256,
            "rank": layer.r[adapter_name],
            "alpha": self.alpha if self.alpha is not None else layer.lora_alpha[adapter_name],
            "alpha_from": self.alpha_from,
            "scale": layer.scaling[adapter_name],
        }


def read_pair(slow: Path, fast: Path) -> dict[str, LoraFile]:
    """The slow and fast LoRA folders of a run, read and checked: {"slow": ..., "fast": ...}."""
    return {"slow": read_lora_file("slow", slow), "fast": read_lora_file("fast", fast)}


def read_lora_file(name: str, folder: Path) -> LoraFile:
    """The `name` ("slow" or "fast") LoRA folder, read and checked: diffusers-format keys, A and B of one rank,
    its alpha. The messages name the LoRA, not an option: the folder may come from a manifest or a flag."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    if not folder.is_dir():
        raise GlanceError(f"the {name} LoRA folder {folder} does not exist; run `glance train` again")
    path = folder / WEIGHTS_NAME
    if not path.is_file():
        raise GlanceError(
            f"the {name} LoRA folder {folder} has no {WEIGHTS_NAME}; run `glance train` again "
            "(a folder of LoRA weights not written by glance train will not do)"
        )
    try:
        tensors = load_file(path)
    except (OSError, SafetensorError) as exc:
        raise GlanceError(f"cannot read {path}: {exc}") from None
    weights: dict[str, dict] = {}
    for key, tensor in tensors.items():
        match = _LORA_KEY.match(key)
        if match is None:
            raise GlanceError(
                f"{path} is not a diffusers-format transformer LoRA (key {key!r}; "
                "expected transformer.<layer>.lora_A.weight / lora_B.weight)"
            )
        weights.setdefault(match["module"], {})[match["part"]] = tensor
    if not weights:
        raise GlanceError(f"{path} holds no LoRA weights")
    for module_name, pair in weights.items():
        if set(pair) != {"A", "B"} or pair["A"].shape[0] != pair["B"].shape[1]:
            raise GlanceError(f"{path}: {module_name} needs a lora_A and a lora_B of the same rank")
    rank = next(iter(weights.values()))["A"].shape[0]
    return LoraFile(folder, weights, *training_alpha(path, rank))


def training_alpha(path: Path, rank: int) -> tuple[float | None, str]:
    """The alpha a LoRA was trained with, when diffusers cannot read it from the file: (alpha, source).

    diffusers reads alpha from the file's adapter metadata and otherwise assumes alpha = rank.
    SimpleTuner 4.10.1 writes no such metadata into its final pytorch_lora_weights.safetensors,
    though glance has it train with alpha = 4 x rank; its config beside the weights says what it used.
    """
    from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY
    from safetensors import safe_open

    with safe_open(path, "pt") as handle:
        if LORA_ADAPTER_METADATA_KEY in (handle.metadata() or {}):
            return None, "file metadata"
    config_path = path.parent / SIMPLETUNER_CONFIG_NAME
    if not config_path.is_file():
        return None, "none: alpha = rank assumed"
    config = read_json(config_path)
    trained_rank = config.get("lora_rank")
    if trained_rank is not None and trained_rank != rank:
        raise GlanceError(f"{config_path} says lora_rank {trained_rank}, but {path} has rank {rank}")
    alpha = config.get("lora_alpha")
    return float(alpha if alpha is not None else rank), SIMPLETUNER_CONFIG_NAME  # SimpleTuner's default: rank


_BLOCK_INDEX = re.compile(r"^transformer\.(?:single_)?transformer_blocks\.(\d+)\.")


def lora_extent(path: Path) -> tuple[int | None, int]:
    """The width of the transformer a LoRA file was made for (its attention inputs) and the blocks it reaches,
    from the safetensors header alone."""
    import json
    import struct

    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    widths = {entry["shape"][1] for key, entry in header.items() if key.endswith("attn.to_q.lora_A.weight")}
    blocks = [int(m[1]) + 1 for key in header if (m := _BLOCK_INDEX.match(key))]
    return (widths.pop() if len(widths) == 1 else None), max(blocks, default=0)


def check_pair_fits(weights: dict[str, Path], model: str) -> None:
    """`glance infer`'s fit check (LoraFile.check_fits), made where the model is not loaded (export, push):
    the LoRAs' width and depth against the transformer's, when its config is at hand or its size is known."""
    from glance.memory.sizes import exact_model_sizes

    sizes = exact_model_sizes(model)
    if sizes is None:
        return  # an unknown Hub model that is not downloaded: nothing to compare with
    for phase, path in weights.items():
        if not Path(path).is_file():
            raise GlanceError(f"the {phase} LoRA is missing: {path}; run `glance train` again")
        width, blocks = lora_extent(path)
        if (width is not None and width != sizes.width) or blocks > sizes.blocks:
            made_for = f"{width} wide" if width is not None else "another width"
            raise GlanceError(
                f"the {phase} LoRA does not fit {model}: it was made for a transformer {made_for} with at least "
                f"{blocks} blocks, {model}'s is {sizes.width} wide with {sizes.blocks}"
            )
