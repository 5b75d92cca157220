"""The memory plans: which quantization, checkpointing and offload make a run fit the GPU, and the
advice when one did not.

Plans, lightest first (the first whose estimate fits 95 % of the card wins):
    training: bf16; bf16 + gradient checkpointing; int8 + checkpointing; int4 + checkpointing
    sampling: bf16; bf16 + model CPU offload; int8; int8 + offload; int4; int4 + offload
A quantized plan also quantizes the largest text encoder (to int8) when it does not fit in bf16,
and has SimpleTuner quantize on the CPU when the bf16 transformer does not fit the GPU. On the
CPU nothing changes: fp32, no quantization unless asked for. The estimates are glance/memory/estimates.py's.

Two phases on one GPU at once (`glance train --phases`, glance/phase_mode.py) plan with
`phases_per_gpu=2`: a plan fits when its estimated peak twice, plus PARALLEL_MARGIN_GIB (a second
CUDA context and the allocator's fragmentation), fits the same 95 %.

Nothing here imports torch.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from glance.families import GlanceError
from glance.memory.estimates import Quantization, sampling_stages, training_stages
from glance.memory.gpu import GpuInfo, gpu_for_plan
from glance.memory.sizes import ModelSizes

QuantizeChoice = Literal["auto", "none", "int8", "int4", "fp8"]

SIMPLETUNER_PRECISION = {"int8": "int8-quanto", "int4": "int4-quanto", "fp8": "fp8-quanto"}
FITS_FRACTION = 0.95  # leave 5 % of the card to the desktop, other processes and fragmentation
PARALLEL_MARGIN_GIB = 2.0  # beyond the 5 %: per extra phase on the card (not measured; the GPU check measures it)


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
    phases_per_gpu: int = 1  # 2: both phases share the card at once

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
        return _plan_line(self.label(), self.estimate_gib, self.gpu, self.fits, self.phases_per_gpu)

    def same_settings(self, other: TrainingPlan) -> bool:
        """True when `other` trains exactly as this plan does (so its configs are the same)."""
        return self.simpletuner_keys() == other.simpletuner_keys()


def _plan_line(label: str, estimate_gib: float, gpu: GpuInfo, fits: bool, phases_per_gpu: int = 1) -> str:
    """A plan with its estimate against a known card, as train, infer and --dry-run print it."""
    verdict = "" if fits else " - does not fit"
    card = f"{gpu.memory_gib:.1f} GiB ({gpu.name})"
    times = f" x {phases_per_gpu} phases at once" if phases_per_gpu > 1 else ""
    return f"memory plan: {label}: estimated peak {estimate_gib:.1f} GiB{times} of {card}{verdict}"


def _first_fitting(what: str, candidates: list, gpu: GpuInfo, *, chosen_by_user: bool, times: int = 1):
    """The first candidate that fits; else the smallest when the user chose the settings (it runs, with a
    line saying it does not fit), or one error line naming the smallest and how to try it anyway."""
    for candidate in candidates:
        if candidate.fits:
            return candidate
    smallest = min(candidates, key=lambda c: c.estimate_gib)
    if not chosen_by_user:
        needs = f"{smallest.estimate_gib:.1f} GiB" + (f" x {times} (+ {PARALLEL_MARGIN_GIB:.0f})" if times > 1 else "")
        where = f"{times} phases at once on " if times > 1 else ""
        raise GlanceError(
            f"no {what} plan fits {where}{gpu.memory_gib:.1f} GiB ({gpu.name}): the smallest, {smallest.label()}, "
            f"needs an estimated {needs}; pass {smallest.options()} to try it anyway"
        )
    return smallest


TRAINING_LADDER: tuple[tuple[Quantization, bool], ...] = (
    ("none", False),
    ("none", True),
    ("int8", True),
    ("int4", True),
)


def _fits(estimate: float, gpu: GpuInfo, times: int = 1) -> bool:
    """`times` runs of `estimate` at once, each beyond the first with PARALLEL_MARGIN_GIB, within 95 % of the card."""
    return times * estimate + (times - 1) * PARALLEL_MARGIN_GIB <= FITS_FRACTION * gpu.memory_gib


def _training_candidate(
    sizes: ModelSizes, gpu: GpuInfo, quantize: Quantization, checkpointing: bool, times: int = 1, **shape
) -> TrainingPlan:
    """One rung, with the text encoder quantized and the quantization moved to the CPU where that is needed."""
    text_quantize: Quantization = "none"
    caching_only = training_stages(sizes, quantize="none", gradient_checkpointing=True, **shape)["caching"]
    # SimpleTuner quantizes text encoders only with the model
    if quantize != "none" and not _fits(caching_only, gpu, times):
        text_quantize = _text_quantize_for(quantize)
    on_gpu = training_stages(
        sizes, quantize=quantize, gradient_checkpointing=checkpointing, text_encoder_quantize=text_quantize, **shape
    )
    quantize_on_cpu = "quantizing" in on_gpu and not _fits(on_gpu["quantizing"], gpu, times)
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
        fits=_fits(estimate, gpu, times),
        phases_per_gpu=times,
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
    phases_per_gpu: int = 1,
) -> TrainingPlan:
    """The lightest training plan that fits the GPU; `quantize` / `gradient_checkpointing` pin a choice.

    `sizes_of` is a ModelSizes, or a callable returning one (so a CPU run never reads the model).
    `phases_per_gpu` 2 plans for both phases on the card at once.
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
        return TrainingPlan(quantize=qs[0], gradient_checkpointing=gcs[-1], phases_per_gpu=phases_per_gpu)
    sizes = sizes_of() if callable(sizes_of) else sizes_of
    shape = {"family": family, "resolution": resolution, "rank": rank}
    candidates = [_training_candidate(sizes, gpu, q, gc, phases_per_gpu, **shape) for q, gc in rungs]
    return _first_fitting("training", candidates, gpu, chosen_by_user=quantize != "auto", times=phases_per_gpu)


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
        return _plan_line(self.label(), self.estimate_gib, self.gpu, self.fits)


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
    return _first_fitting("sampling", candidates, gpu, chosen_by_user=quantize != "auto")


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
    if plan.phases_per_gpu > 1:  # two phases shared the card: one at a time first
        both = f"both phases at once ({plan.label()}{estimate} each)"
        return f"the GPU ran out of memory with {both}; try --phases sequential"
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
