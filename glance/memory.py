"""The memory plan: which quantization, checkpointing and offload make a run fit the GPU.

Sizes come from the model itself: the safetensors headers of a local (or Hugging Face cached)
diffusers folder give every component's parameter count without loading a tensor; the
transformer's config gives its width and depth. A short table of known hub ids is the fallback.

Estimates, in GiB (2**30 bytes), as `nvidia-smi` counts a process:

    training peak = max(caching, quantizing, training)
      caching    = CTX + text encoders + VAE + VAE_ENCODE x pixels/1024^2
      quantizing = CTX + 1.05 x transformer in bf16        (only when SimpleTuner quantizes on the GPU)
      training   = CTX + transformer x bytes(q) + LoRA state + activations + TRAIN_SLACK
        activations, checkpointed  = tokens x width x 2 B x (blocks + BLOCK_ACTIVATIONS)
        activations, all kept      = tokens x width x 2 B x blocks x BLOCK_ACTIVATIONS
        LoRA state                 = rank x width x 16 x blocks x 8 B (weights, grads, AdamW bf16 states)
    sampling peak (all components on the GPU) = CTX + every weight + LoRAs + SAMPLE_ACTIVATIONS x pixels/1024^2
    sampling peak with model CPU offload      = max(CTX + transformer + LoRAs + denoising, CTX + text encoders,
                                                    CTX + VAE + decoding)

bytes(q): bf16 2, int8 1, fp8 1, int4 0.5. tokens = image tokens (1024 px -> 4096) + text tokens
(FLUX 512). SimpleTuner frees the text encoders and the VAE before it loads the transformer, so
caching and training never overlap. BLOCK_ACTIVATIONS (24 tensors of width x tokens per block) is
counted from the FLUX block's operations, not measured. Calibration, one H100 (../shared/FACTS.md):
an 11.90 B FLUX-sized transformer, rank 16, 1024 px, bf16, trained at 26.6 GB (read as GiB) with
SimpleTuner's default gradient checkpointing ON (4.10.1 defaults it to true), which sets
TRAIN_SLACK; sampling it took 24.85 GiB (torch max allocated) with narrow text encoders, which
sets SAMPLE_ACTIVATIONS. Nothing else here is measured.

Plans, lightest first (the first whose estimate fits 95 % of the card wins):
    training: bf16; bf16 + gradient checkpointing; int8 + checkpointing; int4 + checkpointing
    sampling: bf16; bf16 + model CPU offload; int8; int8 + offload; int4; int4 + offload
A quantized plan also quantizes the largest text encoder (to int8) when it does not fit in bf16,
and has SimpleTuner quantize on the CPU when the bf16 transformer does not fit the GPU. On the
CPU nothing changes: fp32, no quantization unless asked for.

Nothing here imports torch.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from glance.families import Family, GlanceError, is_local_model

QuantizeChoice = Literal["auto", "none", "int8", "int4", "fp8"]
Quantization = Literal["none", "int8", "int4", "fp8"]

GIB = 2**30
BYTES_PER_PARAM: dict[str, float] = {"none": 2.0, "int8": 1.0, "fp8": 1.0, "int4": 0.5}
SIMPLETUNER_PRECISION = {"int8": "int8-quanto", "int4": "int4-quanto", "fp8": "fp8-quanto"}
FITS_FRACTION = 0.95  # leave 5 % of the card to the desktop, other processes and fragmentation

CTX_GIB = 0.5  # CUDA context and cuBLAS workspace, as nvidia-smi counts them
VAE_ENCODE_GIB = 2.0  # VAE encoder activations at 1024x1024 (estimate)
BLOCK_ACTIVATIONS = 24  # tensors of tokens x width a transformer block keeps for backward (counted, not measured)
LORA_MATRICES_PER_BLOCK = 16  # in+out widths of the attention projections LoRA targets, per block
LORA_STATE_BYTES = 8  # bf16 weight + bf16 grad + two bf16 AdamW states
DENOISE_BLOCKS = 10  # tensors of tokens x width alive in one no-grad block
TEXT_TOKENS = {"flux": 512, "sd3": 333, "qwen_image": 256}  # T5 512 / CLIP 77 + T5 256 / a prompt
# Calibrated on the measured points (see the docstring).
MEASURED_TRAIN_GIB = 26.6
MEASURED_SAMPLE_GIB = 24.85


class ModelSizes(BaseModel):
    """What the estimate needs to know about a model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    transformer_params: int
    text_encoder_params: dict[str, int]  # diffusers component name -> parameters
    vae_params: int
    width: int  # transformer hidden size
    blocks: int  # transformer blocks (FLUX: double + single)
    source: str  # where the numbers came from

    @property
    def large_text_encoder(self) -> str | None:
        """The text encoder worth quantizing (T5-XXL, Qwen2.5-VL): the largest one."""
        if not self.text_encoder_params:
            return None
        return max(self.text_encoder_params, key=self.text_encoder_params.get)


_SD3_TEXT_ENCODERS = {"text_encoder": 123_650_304, "text_encoder_2": 694_659_840, "text_encoder_3": 4_762_310_656}
# Fallback sizes of known hub models (parameters from their safetensors; width = heads x head dim).
KNOWN_SIZES: dict[str, ModelSizes] = {
    "black-forest-labs/FLUX.1-dev": ModelSizes(
        transformer_params=11_901_408_320,
        text_encoder_params={"text_encoder": 123_060_480, "text_encoder_2": 4_762_310_656},
        vae_params=83_819_683,
        width=3072,
        blocks=57,
        source="known size of black-forest-labs/FLUX.1-dev",
    ),
    "Qwen/Qwen-Image": ModelSizes(
        transformer_params=20_430_401_088,
        text_encoder_params={"text_encoder": 8_292_166_656},
        vae_params=126_892_531,
        width=3072,
        blocks=60,
        source="known size of Qwen/Qwen-Image",
    ),
    "stabilityai/stable-diffusion-3.5-large": ModelSizes(
        transformer_params=8_056_000_000,
        text_encoder_params=_SD3_TEXT_ENCODERS,
        vae_params=83_653_863,
        width=2432,
        blocks=38,
        source="known size of stabilityai/stable-diffusion-3.5-large",
    ),
    "stabilityai/stable-diffusion-3.5-medium": ModelSizes(
        transformer_params=2_243_000_000,
        text_encoder_params=_SD3_TEXT_ENCODERS,
        vae_params=83_653_863,
        width=1536,
        blocks=24,
        source="known size of stabilityai/stable-diffusion-3.5-medium",
    ),
    "stabilityai/stable-diffusion-3-medium-diffusers": ModelSizes(
        transformer_params=2_028_328_000,
        text_encoder_params=_SD3_TEXT_ENCODERS,
        vae_params=83_653_863,
        width=1536,
        blocks=24,
        source="known size of stabilityai/stable-diffusion-3-medium-diffusers",
    ),
}


# --- sizes ------------------------------------------------------------------------------------


def safetensors_params(path: Path) -> int:
    """Parameters in one safetensors file, from its header alone."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    return sum(math.prod(entry["shape"]) for key, entry in header.items() if key != "__metadata__")


def component_params(folder: Path) -> int | None:
    """Parameters of one component folder (transformer/, text_encoder_2/, ...), or None without weights.

    A sharded checkpoint is read through its index; variant files (`*.fp16.safetensors`) beside the
    main weights are not counted twice.
    """
    indexes = sorted(folder.glob("*.safetensors.index.json"))
    if indexes:
        files = sorted(set(json.loads(indexes[0].read_text(encoding="utf-8"))["weight_map"].values()))
        paths = [folder / name for name in files]
    else:
        paths = [p for p in sorted(folder.glob("*.safetensors")) if p.name.count(".") == 1]
    if not paths or not all(p.is_file() for p in paths):
        return None
    return sum(safetensors_params(p) for p in paths)


def read_model_sizes(folder: Path) -> ModelSizes | None:
    """Sizes of a local diffusers folder from its safetensors headers and configs; None when incomplete."""
    folder = Path(folder)
    index_path = folder / "model_index.json"
    config_path = folder / "transformer" / "config.json"
    if not index_path.is_file() or not config_path.is_file():
        return None
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        config = json.loads(config_path.read_text(encoding="utf-8"))
        transformer = component_params(folder / "transformer")
        vae = component_params(folder / "vae") or 0
        encoders = {}
        for name, value in index.items():
            if name.startswith("text_encoder") and isinstance(value, list) and value[0] is not None:
                params = component_params(folder / name)
                if params is None:
                    return None
                encoders[name] = params
    except (OSError, ValueError, KeyError, struct.error):
        return None
    if transformer is None:
        return None
    width = config.get("num_attention_heads", 0) * config.get("attention_head_dim", 0)
    blocks = config.get("num_layers", 0) + config.get("num_single_layers", 0)
    if not width or not blocks:
        return None
    return ModelSizes(
        transformer_params=transformer,
        text_encoder_params=encoders,
        vae_params=vae,
        width=width,
        blocks=blocks,
        source=f"safetensors headers in {folder}",
    )


def model_sizes(model: str, family: Family) -> ModelSizes:
    """Sizes of `model`: its own files (a local folder or the hub cache), else the known table.

    An unknown hub id gets the sizes of its family's first model, and says so.
    """
    from glance.hub import cached_snapshot

    folder = Path(model).expanduser() if is_local_model(model) else cached_snapshot(model)
    if folder is not None:
        sizes = read_model_sizes(folder)
        if sizes is not None:
            return sizes
    if model in KNOWN_SIZES:
        return KNOWN_SIZES[model]
    stand_in = next((hub_id for hub_id in family.hub_ids if hub_id in KNOWN_SIZES), None)
    if stand_in is None:
        raise GlanceError(f"cannot tell how large {model} is; pass --quantize explicitly")
    sizes = KNOWN_SIZES[stand_in]
    return sizes.model_copy(update={"source": f"{sizes.source} (stand-in for {model})"})


# --- estimates --------------------------------------------------------------------------------


def _gib(value: float) -> float:
    return value / GIB


def image_tokens(resolution: int) -> int:
    """Packed image tokens at a square resolution (8x VAE, 2x2 patches: 1024 px -> 4096)."""
    return (resolution // 16) ** 2


def _lora_state_gib(sizes: ModelSizes, rank: int) -> float:
    return _gib(rank * sizes.width * LORA_MATRICES_PER_BLOCK * sizes.blocks * LORA_STATE_BYTES)


def _activations_gib(sizes: ModelSizes, tokens: int, gradient_checkpointing: bool) -> float:
    per_block = tokens * sizes.width * 2
    if gradient_checkpointing:  # each block keeps its input; one block is recomputed at a time
        return _gib(per_block * (sizes.blocks + BLOCK_ACTIVATIONS))
    return _gib(per_block * sizes.blocks * BLOCK_ACTIVATIONS)


def _text_encoders_gib(sizes: ModelSizes, large_quantize: Quantization) -> float:
    total = 0.0
    for name, params in sizes.text_encoder_params.items():
        quantize = large_quantize if name == sizes.large_text_encoder else "none"
        total += params * BYTES_PER_PARAM[quantize]
    return _gib(total)


def _train_core_gib(sizes: ModelSizes, *, tokens: int, rank: int, quantize: Quantization, checkpointing: bool) -> float:
    weights = _gib(sizes.transformer_params * BYTES_PER_PARAM[quantize])
    return CTX_GIB + weights + _lora_state_gib(sizes, rank) + _activations_gib(sizes, tokens, checkpointing)


# The measured training point: FLUX.1-dev-sized, 1024 px, rank 16, bf16, checkpointing (SimpleTuner's default).
_FLUX_SIZES = KNOWN_SIZES["black-forest-labs/FLUX.1-dev"]
TRAIN_SLACK_GIB = MEASURED_TRAIN_GIB - _train_core_gib(
    _FLUX_SIZES.model_copy(update={"transformer_params": 11_900_000_000}),
    tokens=image_tokens(1024) + TEXT_TOKENS["flux"],
    rank=16,
    quantize="none",
    checkpointing=True,
)
# The measured sampling point: torch's max allocated (no CUDA context), narrow text encoders, two rank-16 LoRAs.
SAMPLE_ACTIVATIONS_GIB = (
    MEASURED_SAMPLE_GIB
    - _gib(11_900_000_000 * 2 + _FLUX_SIZES.vae_params * 2)
    - 2 * _lora_state_gib(_FLUX_SIZES, 16) / 4  # the LoRA weights alone: 2 of the 8 bytes
)


def training_stages(
    sizes: ModelSizes,
    *,
    family: str,
    resolution: int,
    rank: int,
    quantize: Quantization,
    gradient_checkpointing: bool,
    text_encoder_quantize: Quantization = "none",
    quantize_on_gpu: bool = True,
) -> dict[str, float]:
    """Estimated GPU memory (GiB) of each stage of one SimpleTuner phase; the peak is the largest."""
    pixels = resolution**2 / 1024**2
    tokens = image_tokens(resolution) + TEXT_TOKENS.get(family, 512)
    stages = {
        "caching": CTX_GIB
        + _text_encoders_gib(sizes, text_encoder_quantize)
        + _gib(sizes.vae_params * 2)
        + VAE_ENCODE_GIB * pixels,
        "training": _train_core_gib(
            sizes, tokens=tokens, rank=rank, quantize=quantize, checkpointing=gradient_checkpointing
        )
        + TRAIN_SLACK_GIB,
    }
    if quantize != "none" and quantize_on_gpu:  # SimpleTuner moves the bf16 transformer to the GPU first
        stages["quantizing"] = CTX_GIB + 1.05 * _gib(sizes.transformer_params * 2)
    return stages


def sampling_stages(
    sizes: ModelSizes,
    *,
    width: int,
    height: int,
    rank: int,
    quantize: Quantization,
    text_encoder_quantize: Quantization,
    cpu_offload: bool,
) -> dict[str, float]:
    """Estimated GPU memory (GiB) of sampling: one stage, or three with model CPU offload."""
    pixels = width * height / 1024**2
    tokens = (width // 16) * (height // 16) + 512
    transformer = _gib(sizes.transformer_params * BYTES_PER_PARAM[quantize])
    loras = 2 * _lora_state_gib(sizes, rank) / 4
    encoders = _text_encoders_gib(sizes, text_encoder_quantize)
    vae = _gib(sizes.vae_params * 2)
    denoise = _gib(tokens * sizes.width * 2 * DENOISE_BLOCKS)
    if not cpu_offload:
        return {"sampling": CTX_GIB + transformer + loras + encoders + vae + SAMPLE_ACTIVATIONS_GIB * pixels}
    return {
        "denoising": CTX_GIB + transformer + loras + denoise,
        "text encoding": CTX_GIB + encoders,
        "decoding": CTX_GIB + vae + max(SAMPLE_ACTIVATIONS_GIB * pixels - denoise, 0.0),
    }


# --- the GPU ----------------------------------------------------------------------------------


class GpuInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    memory_gib: float


def parse_nvidia_smi(text: str, visible: str | None = None) -> GpuInfo | None:
    """The smallest visible GPU from `nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits`."""
    gpus = []
    for line in text.strip().splitlines():
        name, _, mib = line.rpartition(",")
        try:
            gpus.append(GpuInfo(name=name.strip(), memory_gib=round(float(mib) / 1024, 1)))
        except ValueError:
            continue
    if visible and all(part.strip().isdigit() for part in visible.split(",")):
        chosen = [int(part) for part in visible.split(",")]
        gpus = [gpu for index, gpu in enumerate(gpus) if index in chosen]
    return min(gpus, key=lambda gpu: gpu.memory_gib) if gpus else None


def detect_gpu() -> GpuInfo | None:
    """The GPU's name and memory from nvidia-smi (torch stays unimported); None when it cannot tell."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        done = subprocess.run(
            [smi, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return parse_nvidia_smi(done.stdout, os.environ.get("CUDA_VISIBLE_DEVICES"))


def gpu_for_plan(gpu_memory: float | None) -> GpuInfo | None:
    """--gpu-memory GB (a card to plan for), else the GPU nvidia-smi reports."""
    if gpu_memory is not None:
        return GpuInfo(name="as given by --gpu-memory", memory_gib=float(gpu_memory))
    return detect_gpu()


# --- plans ------------------------------------------------------------------------------------


def _quantize_label(quantize: Quantization, cuda: bool) -> str:
    return {"none": "bf16" if cuda else "fp32"}.get(quantize, quantize)


class TrainingPlan(BaseModel):
    """How one phase trains: what SimpleTuner is told, and the estimate behind it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quantize: Quantization
    gradient_checkpointing: bool
    text_encoder_quantize: Quantization = "none"  # the largest text encoder, while caching
    quantize_on_cpu: bool = False  # SimpleTuner's quantize_via: the bf16 transformer does not fit the GPU
    large_text_encoder: str | None = None  # its diffusers component name, when it is quantized
    cuda: bool = True
    estimate_gib: float | None = None
    gpu: GpuInfo | None = None
    fits: bool | None = None  # None: no GPU to compare with

    def label(self) -> str:
        parts = [_quantize_label(self.quantize, self.cuda)]
        parts.append("gradient checkpointing" if self.gradient_checkpointing else "no gradient checkpointing")
        if self.text_encoder_quantize != "none":
            parts.append(f"{self.text_encoder_quantize} text encoder")
        if self.quantize_on_cpu:
            parts.append("quantized on the CPU")
        return " + ".join(parts[:1]) + "".join(f", {p}" for p in parts[1:])

    def options(self) -> str:
        """The flags that choose this plan."""
        checkpointing = "--gradient-checkpointing" if self.gradient_checkpointing else "--no-gradient-checkpointing"
        return f"--quantize {self.quantize} {checkpointing}"

    def simpletuner_keys(self) -> dict:
        """The TrainingConfig fields of this plan."""
        keys: dict = {"gradient_checkpointing": self.gradient_checkpointing}
        if self.quantize != "none":
            keys["base_model_precision"] = SIMPLETUNER_PRECISION[self.quantize]
        if self.quantize_on_cpu:
            keys["quantize_via"] = "cpu"
        if self.text_encoder_quantize != "none" and self.large_text_encoder is not None:
            number = self.large_text_encoder.removeprefix("text_encoder").lstrip("_") or "1"
            keys[f"text_encoder_{number}_precision"] = SIMPLETUNER_PRECISION[self.text_encoder_quantize]
        return keys

    def describe(self) -> str:
        """The one line `glance train` and `--dry-run` print."""
        if not self.cuda:
            return f"memory plan: {self.label()} on the CPU (no GPU to plan for)"
        if self.estimate_gib is None or self.gpu is None:
            return f"memory plan: {self.label()} (GPU memory unknown: no nvidia-smi; --gpu-memory GB plans for a card)"
        verdict = "" if self.fits else " - does not fit"
        return (
            f"memory plan: {self.label()}: estimated peak {self.estimate_gib:.1f} GiB of "
            f"{self.gpu.memory_gib:.1f} GiB ({self.gpu.name}){verdict}"
        )


TRAINING_LADDER: tuple[tuple[Quantization, bool], ...] = (
    ("none", False),
    ("none", True),
    ("int8", True),
    ("int4", True),
)


def _fits(estimate: float, gpu: GpuInfo) -> bool:
    return estimate <= FITS_FRACTION * gpu.memory_gib


def _training_candidate(
    sizes: ModelSizes, gpu: GpuInfo, quantize: Quantization, checkpointing: bool, **shape
) -> TrainingPlan:
    """One rung, with the text encoder quantized and the quantization moved to the CPU where that is needed."""
    text_quantize: Quantization = "none"
    caching_only = training_stages(sizes, quantize="none", gradient_checkpointing=True, **shape)["caching"]
    if quantize != "none" and not _fits(caching_only, gpu):  # SimpleTuner quantizes text encoders only with the model
        text_quantize = _text_quantize_for(quantize)
    on_gpu = training_stages(
        sizes, quantize=quantize, gradient_checkpointing=checkpointing, text_encoder_quantize=text_quantize, **shape
    )
    quantize_on_cpu = "quantizing" in on_gpu and not _fits(on_gpu["quantizing"], gpu)
    stages = training_stages(
        sizes,
        quantize=quantize,
        gradient_checkpointing=checkpointing,
        text_encoder_quantize=text_quantize,
        quantize_on_gpu=not quantize_on_cpu,
        **shape,
    )
    estimate = max(stages.values())
    return TrainingPlan(
        quantize=quantize,
        gradient_checkpointing=checkpointing,
        text_encoder_quantize=text_quantize,
        quantize_on_cpu=quantize_on_cpu,
        large_text_encoder=sizes.large_text_encoder if text_quantize != "none" else None,
        estimate_gib=round(estimate, 2),
        gpu=gpu,
        fits=_fits(estimate, gpu),
    )


def plan_training(
    sizes_of,
    *,
    family: str,
    resolution: int,
    rank: int,
    cuda: bool,
    quantize: QuantizeChoice = "auto",
    gradient_checkpointing: bool | None = None,
    gpu_memory: float | None = None,
) -> TrainingPlan:
    """The lightest training plan that fits the GPU; `quantize` / `gradient_checkpointing` pin a choice.

    `sizes_of` is a ModelSizes, or a callable returning one (so a CPU run never reads the model).
    Raises GlanceError when `quantize` is auto and no plan fits, naming what the smallest needs.
    """
    if not cuda:
        if gpu_memory is not None:
            raise GlanceError("--gpu-memory plans for a GPU: pass --device cuda to plan a run for one")
        return TrainingPlan(
            quantize="none" if quantize == "auto" else quantize,
            gradient_checkpointing=True if gradient_checkpointing is None else gradient_checkpointing,
            cuda=False,
        )
    gpu = gpu_for_plan(gpu_memory)
    qs: tuple[Quantization, ...] = ("none", "int8", "int4") if quantize == "auto" else (quantize,)
    gcs = (False, True) if gradient_checkpointing is None else (gradient_checkpointing,)
    rungs = [(q, gc) for q in qs for gc in gcs]
    if quantize == "auto" and gradient_checkpointing is None:
        # Checkpointing costs time, quantization costs quality: never quantize before checkpointing.
        rungs = [rung for rung in rungs if rung in TRAINING_LADDER]
    if gpu is None:  # nothing to compare with: today's configs (bf16, SimpleTuner's default checkpointing)
        return TrainingPlan(quantize=qs[0], gradient_checkpointing=gcs[-1])
    sizes = sizes_of() if callable(sizes_of) else sizes_of
    shape = {"family": family, "resolution": resolution, "rank": rank}
    candidates = [_training_candidate(sizes, gpu, q, gc, **shape) for q, gc in rungs]
    for candidate in candidates:
        if candidate.fits:
            return candidate
    smallest = min(candidates, key=lambda c: c.estimate_gib)
    if quantize == "auto":
        raise GlanceError(
            f"no training plan fits {gpu.memory_gib:.1f} GiB ({gpu.name}): the smallest, {smallest.label()}, "
            f"needs an estimated {smallest.estimate_gib:.1f} GiB; pass {smallest.options()} to try it anyway"
        )
    return smallest  # the user's own choice runs, with a line saying it does not fit


class SamplingPlan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    quantize: Quantization
    text_encoder_quantize: Quantization = "none"
    cpu_offload: bool = False
    large_text_encoder: str | None = None
    cuda: bool = True
    estimate_gib: float | None = None
    gpu: GpuInfo | None = None
    fits: bool | None = None

    def label(self) -> str:
        text = {"none": "bf16" if self.cuda else "no quantization"}.get(self.quantize, self.quantize)
        if self.text_encoder_quantize != "none":
            text += f" (and the {self.text_encoder_quantize} {self.large_text_encoder})"
        return text + (" + model CPU offload" if self.cpu_offload else "")

    def options(self) -> str:
        return f"--quantize {self.quantize}" + (" --cpu-offload" if self.cpu_offload else "")

    def describe(self) -> str:
        if self.estimate_gib is None or self.gpu is None:
            return f"memory plan: {self.label()}"
        verdict = "" if self.fits else " - does not fit"
        return (
            f"memory plan: {self.label()}: estimated peak {self.estimate_gib:.1f} GiB of "
            f"{self.gpu.memory_gib:.1f} GiB ({self.gpu.name}){verdict}"
        )


SAMPLING_LADDER: tuple[tuple[Quantization, bool], ...] = (
    ("none", False),
    ("none", True),
    ("int8", False),
    ("int8", True),
    ("int4", False),
    ("int4", True),
)


def plan_sampling(
    sizes_of,
    *,
    device: str,
    width: int,
    height: int,
    rank: int = 16,
    quantize: QuantizeChoice = "auto",
    cpu_offload: bool = False,
    gpu_memory: float | None = None,
) -> SamplingPlan:
    """The lightest sampling plan that fits the GPU it runs on; off CUDA only what was asked for."""
    if device != "cuda":
        chosen: Quantization = "none" if quantize == "auto" else quantize
        large = (sizes_of() if callable(sizes_of) else sizes_of).large_text_encoder if chosen != "none" else None
        return SamplingPlan(
            quantize=chosen,
            text_encoder_quantize="none" if chosen == "none" else _text_quantize_for(chosen),
            cpu_offload=cpu_offload,
            large_text_encoder=large,
            cuda=False,
        )
    sizes = sizes_of() if callable(sizes_of) else sizes_of
    gpu = gpu_for_plan(gpu_memory)
    rungs = [
        (q, offload)
        for q, offload in SAMPLING_LADDER
        if (quantize == "auto" or q == quantize) and (offload or not cpu_offload)
    ]
    candidates = []
    for q, offload in rungs:
        text_quantize = "none" if q == "none" else _text_quantize_for(q)
        stages = sampling_stages(
            sizes,
            width=width,
            height=height,
            rank=rank,
            quantize=q,
            text_encoder_quantize=text_quantize,
            cpu_offload=offload,
        )
        estimate = max(stages.values())
        candidates.append(
            SamplingPlan(
                quantize=q,
                text_encoder_quantize=text_quantize,
                cpu_offload=offload,
                large_text_encoder=sizes.large_text_encoder,
                estimate_gib=round(estimate, 2),
                gpu=gpu,
                fits=None if gpu is None else _fits(estimate, gpu),
            )
        )
    if gpu is None:
        return candidates[0]
    for candidate in candidates:
        if candidate.fits:
            return candidate
    smallest = min(candidates, key=lambda c: c.estimate_gib)
    if quantize == "auto":
        raise GlanceError(
            f"no sampling plan fits {gpu.memory_gib:.1f} GiB ({gpu.name}): the smallest, {smallest.label()}, "
            f"needs an estimated {smallest.estimate_gib:.1f} GiB; pass {smallest.options()} to try it anyway"
        )
    return smallest


def _text_quantize_for(quantize: Quantization) -> Quantization:
    # An int4 T5 / Qwen2.5-VL loses too much of the prompt; int8 is the floor for the text encoder.
    return "fp8" if quantize == "fp8" else "int8"


# --- out of memory ----------------------------------------------------------------------------

OOM_MARKERS = ("CUDA out of memory", "OutOfMemoryError", "CUDA error: out of memory")


def is_out_of_memory(text: str) -> bool:
    return any(marker in text for marker in OOM_MARKERS)


def next_training_plan(plan: TrainingPlan) -> str:
    """The flags of the next lighter training plan than `plan`, or what is left to try."""
    ladder = list(TRAINING_LADDER)
    current = (plan.quantize if plan.quantize != "fp8" else "int8", plan.gradient_checkpointing)
    later = ladder[ladder.index(current) + 1 :] if current in ladder else ladder[2:]
    if not later:
        return "no lighter plan is left: a smaller --resolution or --rank, or a GPU with more memory"
    quantize, checkpointing = later[0]
    flags = f"--quantize {quantize} " + ("--gradient-checkpointing" if checkpointing else "--no-gradient-checkpointing")
    return f"try {flags}"


def oom_advice(log_text: str, plan: TrainingPlan | None) -> str | None:
    """One line for a phase that ran out of GPU memory; None when the log shows no such error."""
    if not is_out_of_memory(log_text):
        return None
    if plan is None:
        return "the GPU ran out of memory; try --quantize int8 --gradient-checkpointing"
    estimate = f", estimated {plan.estimate_gib:.1f} GiB" if plan.estimate_gib is not None else ""
    return f"the GPU ran out of memory with {plan.label()}{estimate}; {next_training_plan(plan)}"


def next_sampling_plan(plan: SamplingPlan) -> str:
    ladder = list(SAMPLING_LADDER)
    current = (plan.quantize if plan.quantize != "fp8" else "int8", plan.cpu_offload)
    later = ladder[ladder.index(current) + 1 :] if current in ladder else []
    if not later:
        return "no lighter plan is left: a smaller --width/--height, or a GPU with more memory"
    quantize, offload = later[0]
    return f"try --quantize {quantize}" + (" --cpu-offload" if offload else "")


def sampling_oom_message(plan: SamplingPlan | None) -> str:
    if plan is None:
        return "the GPU ran out of memory; try --quantize int8 --cpu-offload"
    estimate = f", estimated {plan.estimate_gib:.1f} GiB" if plan.estimate_gib is not None else ""
    return f"the GPU ran out of memory sampling with {plan.label()}{estimate}; {next_sampling_plan(plan)}"


# --- diffusers quantization of a pipeline (sampling) ------------------------------------------

DIFFUSERS_WEIGHTS = {"int8": "int8", "int4": "int4", "fp8": "float8"}


def pipeline_quantization_config(plan: SamplingPlan):
    """diffusers' PipelineQuantizationConfig for `plan` (quanto backend): the transformer and the
    largest text encoder; None for an unquantized plan. Imports diffusers and transformers."""
    if plan.quantize == "none":
        return None
    import warnings

    import diffusers
    import transformers
    from diffusers.quantizers import PipelineQuantizationConfig

    mapping = {}
    with warnings.catch_warnings():  # diffusers marks its quanto backend deprecated (for 1.0); it works in 0.42
        warnings.simplefilter("ignore", FutureWarning)
        mapping["transformer"] = diffusers.QuantoConfig(weights_dtype=DIFFUSERS_WEIGHTS[plan.quantize])
    if plan.large_text_encoder is not None and plan.text_encoder_quantize != "none":
        mapping[plan.large_text_encoder] = transformers.QuantoConfig(
            weights=DIFFUSERS_WEIGHTS[plan.text_encoder_quantize]
        )
    return PipelineQuantizationConfig(quant_mapping=mapping)


def is_quantized(model) -> bool:
    return getattr(model, "hf_quantizer", None) is not None
