"""A sampling plan's quantization as diffusers loads it: the only part of the memory plan that
imports diffusers and transformers (inside the function), when the sampler loads its pipeline.
"""

from __future__ import annotations

from glance.memory.plans import SamplingPlan

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
