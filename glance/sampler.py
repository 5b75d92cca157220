"""The diffusers boundary: one pipeline with its memory plan, the exact trained sigmas, the slow -> fast switch.

The scheduler is rebuilt without any shifting, so it steps through exactly the sigmas SimpleTuner
trained on (slow then fast, then the 0 the scheduler appends), and a step-end callback swaps the
"slow" adapter for the "fast" one after the last slow step. What actually ran (the sigma of each
step and the adapter active for it) is recorded at the scheduler and checked for every image.

torch and diffusers are imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass

from glance.families import Family, GlanceError, guidance_kwargs
from glance.infer_options import InferOptions
from glance.memory.pipeline_quantization import pipeline_quantization_config
from glance.memory.plans import SamplingPlan, plan_sampling
from glance.memory.sizes import model_sizes
from glance.schedule import TimestepLists, switch_step


@dataclass(frozen=True)
class StepRecord:
    """One scheduler step as it ran: from `sigma` to `sigma_next`, with these adapters active."""

    step: int
    sigma: float
    sigma_next: float
    adapters: tuple[str, ...]


@dataclass(frozen=True)
class Rendered:
    """One pipeline call: the image, the steps as they ran, and how long it took."""

    image: object  # PIL.Image.Image
    trace: list[StepRecord]
    seconds: float  # the pipeline call (text encoding, denoising, decoding)
    denoise_seconds: float  # the denoising steps alone (first transformer call to the last scheduler step)


def sampling_plan(options: InferOptions, family: Family, device: str, model: str | None = None) -> SamplingPlan:
    """The memory plan for this run on `device`: quantization and offload (glance/memory/)."""
    return plan_sampling(
        lambda: model_sizes(model or options.model, family),
        device=device,
        width=options.width,
        height=options.height,
        quantize=options.quantize,
        cpu_offload=options.cpu_offload,
        gpu_memory=options.gpu_memory,
    )


def resolve_device(choice: str) -> str:
    import torch

    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    if choice == "auto":
        return next(device for device, present in available.items() if present)
    if not available[choice]:
        raise GlanceError(f"--device {choice}: no {choice} device is available")
    return choice


def resolve_dtype(choice: str, device: str) -> str:
    if choice != "auto":
        return choice
    # Accelerators run these models in bfloat16 (their native precision); CPUs lack fast bfloat16 kernels.
    return "float32" if device == "cpu" else "bfloat16"


def load_pipeline(model: str, family: Family, dtype, memory: SamplingPlan | None = None):
    import warnings

    import diffusers

    pipeline_class = getattr(diffusers, family.pipeline_class_for(model))
    # The quanto backend quantizes each weight as it loads (on the CPU), so the bf16 model never reaches the GPU.
    quantization = pipeline_quantization_config(memory) if memory is not None else None
    try:
        with warnings.catch_warnings():  # diffusers marks its quanto backend deprecated (for 1.0); it works in 0.42
            warnings.filterwarnings("ignore", message=".*Quanto", category=FutureWarning)
            quantized = {"quantization_config": quantization} if quantization is not None else {}
            return pipeline_class.from_pretrained(model, dtype=dtype, use_safetensors=True, **quantized)
    except OSError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GlanceError(f"cannot load {model}: {first_line}") from None


def exact_scheduler(config):
    """A FlowMatchEulerDiscreteScheduler that steps through exactly the sigmas it is given.

    No static or dynamic shift, no terminal stretch, no Karras/exponential/beta respacing: the
    sigmas passed to the pipeline are the sigmas sampled, followed by the 0 the scheduler appends.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler.from_config(
        config,
        shift=1.0,
        use_dynamic_shifting=False,
        shift_terminal=None,
        use_karras_sigmas=False,
        use_exponential_sigmas=False,
        use_beta_sigmas=False,
        invert_sigmas=False,
        stochastic_sampling=False,
    )


def sampling_guidance(options: InferOptions, family: Family, pipe) -> dict:
    """guidance_scale / true_cfg_scale / negative_prompt for the pipeline call: the options over the recipe."""
    kwargs = guidance_kwargs(
        family.recipe, guidance=options.guidance, true_cfg=options.true_cfg, negative_prompt=options.negative_prompt
    )
    if "true_cfg_scale" in kwargs and "true_cfg_scale" not in inspect.signature(pipe.__call__).parameters:
        raise GlanceError(f"--true-cfg: {family.pipeline_class} has no true CFG; use --guidance")
    return kwargs


def render_base(pipe, call_kwargs: dict, steps: int, seed: int, on_step: Callable[[], None] | None = None) -> Rendered:
    """The base model at its own `steps`-step schedule: the pipeline's own scheduler, no LoRA layer yet."""
    return _render(pipe, {**call_kwargs, "num_inference_steps": steps}, seed, on_step)


def render_exact(pipe, call_kwargs: dict, sigmas: list[float], seed: int, on_step: Callable[[], None] | None = None):
    """The base model (no adapter active) on exactly `sigmas`: `pipe` has the exact scheduler. What
    glance's schedule does without its LoRAs (`glance eval`'s schedule column)."""
    rendered = _render(pipe, {**call_kwargs, "sigmas": list(sigmas), "num_inference_steps": len(sigmas)}, seed, on_step)
    executed = [record.sigma for record in rendered.trace]
    if executed != list(sigmas):
        raise GlanceError(f"the pipeline stepped through sigmas {executed}, not {list(sigmas)}")
    return rendered


def render_glance(
    pipe,
    call_kwargs: dict,
    lists: TimestepLists,
    adapter_weights: dict[str, float],
    seed: int,
    on_step: Callable[[], None] | None = None,
) -> Rendered:
    """One image on exactly the trained sigmas, slow adapter then fast, its trace checked.

    `pipe` has both adapters loaded and the exact scheduler; `adapter_weights` make each adapter's
    scale its trained alpha / rank (LoraFile.load_into).
    """
    last_slow_step = switch_step(lists) - 1

    def switch_to_fast(pipe, step, timestep, callback_kwargs):
        if step == last_slow_step:
            pipe.set_adapters("fast", adapter_weights=adapter_weights["fast"])
        return {}

    pipe.set_adapters("slow", adapter_weights=adapter_weights["slow"])  # the last image ended on "fast"
    rendered = _render(
        pipe,
        {
            **call_kwargs,
            "sigmas": lists.sigmas,
            "num_inference_steps": len(lists.sigmas),
            "callback_on_step_end": switch_to_fast,
        },
        seed,
        on_step,
    )
    check_trace(rendered.trace, lists)
    return rendered


def check_trace(trace: list[StepRecord], lists: TimestepLists) -> None:
    """Refuse an image whose sampling differed from training: other sigmas, or the wrong LoRA at a step."""
    executed = [record.sigma for record in trace]
    if executed != lists.sigmas or trace[-1].sigma_next != 0.0:
        raise GlanceError(f"the pipeline stepped through sigmas {executed}, not the trained {lists.sigmas}")
    expected = [("slow",)] * len(lists.slow) + [("fast",)] * len(lists.fast)
    active = [record.adapters for record in trace]
    if active != expected:
        raise GlanceError(f"the adapters per step were {active}, expected slow then fast")


def _render(pipe, call_kwargs: dict, seed: int, on_step: Callable[[], None] | None = None) -> Rendered:
    """Run the pipeline once, recording each scheduler step as it happens.

    The denoising time runs from the first transformer call to the end of the last scheduler step
    (on CUDA both ends wait for the device: two synchronisations per image).
    """
    import torch

    scheduler = pipe.scheduler
    stepped: list[tuple] = []
    step = scheduler.step
    cuda = pipe._execution_device.type == "cuda"
    clock: dict[str, float] = {}

    def first_call(module, args):
        if "first" not in clock:
            if cuda:
                torch.cuda.synchronize()
            clock["first"] = time.perf_counter()

    def recording_step(*args, **kwargs):
        adapters = tuple(pipe.get_active_adapters())  # the adapters the model call before this step ran with
        output = step(*args, **kwargs)
        # The scheduler's own sigma tensor and the index it just stepped from (step() has advanced it);
        # read out after the run, so recording adds no device sync to the loop.
        stepped.append((scheduler.step_index - 1, scheduler.sigmas, adapters))
        if scheduler.step_index == len(scheduler.timesteps):
            if cuda:
                torch.cuda.synchronize()
            clock["last"] = time.perf_counter()
        if on_step is not None:
            on_step()
        return output

    scheduler.step = recording_step
    hook = pipe.transformer.register_forward_pre_hook(first_call)
    try:
        started = time.perf_counter()
        # A CPU generator gives the same starting noise on every device.
        generator = torch.Generator("cpu").manual_seed(seed)
        image = pipe(**call_kwargs, generator=generator).images[0]
        seconds = time.perf_counter() - started
    finally:
        del scheduler.step
        hook.remove()
    trace = [
        StepRecord(index, float(sigmas[index]), float(sigmas[index + 1]), adapters)
        for index, sigmas, adapters in stepped
    ]
    denoise = clock.get("last", 0.0) - clock.get("first", clock.get("last", 0.0))
    return Rendered(image, trace, seconds, denoise)
