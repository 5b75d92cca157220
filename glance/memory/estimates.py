"""What a plan needs: the GPU memory of each stage of training and sampling, estimated from the sizes.

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

Nothing here imports torch.
"""

from __future__ import annotations

from typing import Literal

from glance.memory.sizes import KNOWN_SIZES, ModelSizes

Quantization = Literal["none", "int8", "int4", "fp8"]

GIB = 2**30
BYTES_PER_PARAM: dict[str, float] = {"none": 2.0, "int8": 1.0, "fp8": 1.0, "int4": 0.5}

CTX_GIB = 0.5  # CUDA context and cuBLAS workspace, as nvidia-smi counts them
VAE_ENCODE_GIB = 2.0  # VAE encoder activations at 1024x1024 (estimate)
BLOCK_ACTIVATIONS = 24  # tensors of tokens x width a transformer block keeps for backward (counted, not measured)
LORA_MATRICES_PER_BLOCK = 16  # in+out widths of the attention projections LoRA targets, per block
LORA_STATE_BYTES = 8  # bf16 weight + bf16 grad + two bf16 AdamW states
DENOISE_BLOCKS = 10  # tensors of tokens x width alive in one no-grad block
# T5 512 / CLIP 77 + T5 256 / a prompt / T5 to the prompt's end + 1 / the prompt (padding dropped) / 512
TEXT_TOKENS = {"flux": 512, "sd3": 333, "qwen_image": 256, "chroma": 256, "z_image": 256, "flux2": 512}
# Calibrated on the measured points (see the docstring).
MEASURED_TRAIN_GIB = 26.6
MEASURED_SAMPLE_GIB = 24.85


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
