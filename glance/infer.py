"""The diffusers boundary: one pipeline, the exact trained sigmas, the slow -> fast LoRA switch.

One pipeline call samples the whole chain. Its scheduler is rebuilt without any shifting, so it
steps through exactly the sigmas SimpleTuner trained on (slow then fast, then the 0 the scheduler
appends), and a step-end callback swaps the "slow" adapter for the "fast" one after the last slow
step. What actually ran (the sigma of each step and the adapter active for it) is recorded at the
scheduler and returned, and written into the PNG.

torch, diffusers and PIL are imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
import time
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from glance import __version__
from glance.families import Family, GlanceError, read_json, resolve_family
from glance.files import check_writable_dir, write_atomic
from glance.manifest import MANIFEST_NAME, WEIGHTS_NAME, load_manifest
from glance.memory import (
    QuantizeChoice,
    SamplingPlan,
    is_out_of_memory,
    is_quantized,
    model_sizes,
    pipeline_quantization_config,
    plan_sampling,
    sampling_oom_message,
)
from glance.schedule import TimestepLists, switch_step

ADAPTERS = ("slow", "fast")
PNG_PARAMETERS_KEY = "parameters"  # the human-readable line A1111 / ComfyUI tools show
PNG_GLANCE_KEY = "glance"  # the full record as JSON
DEFAULT_SIZE = 1024  # without a manifest: the Glance paper's training resolution
SIMPLETUNER_CONFIG_NAME = "simpletuner_config.json"  # SimpleTuner writes it beside the LoRA it trains

DeviceChoice = Literal["auto", "cuda", "mps", "cpu"]
DtypeChoice = Literal["auto", "bfloat16", "float16", "float32"]


class InferOptions(BaseModel):
    """Everything one `glance infer` run needs; `options_from_manifest` fills it from a training run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str
    model: str  # hub id or local diffusers folder
    family: str | None = None  # detected from the model when left out
    lists: TimestepLists  # the slow and fast lists the LoRAs were trained on
    slow_lora: Path
    fast_lora: Path
    out: Path = Path("glance.png")
    seed: int = 0
    width: int = Field(DEFAULT_SIZE, ge=16)
    height: int = Field(DEFAULT_SIZE, ge=16)
    guidance: float | None = None  # FLUX: embedded guidance; SD3: CFG scale. Default: the family recipe
    negative_prompt: str | None = None  # default: the family recipe (Qwen-Image: " ")
    true_cfg: float | None = None  # default: the family recipe (Qwen-Image: 5)
    device: DeviceChoice = "auto"
    dtype: DtypeChoice = "auto"
    cpu_offload: bool = False
    quantize: QuantizeChoice = "auto"  # the memory plan (glance/memory.py): auto fits the GPU it runs on
    gpu_memory: float | None = Field(None, gt=0)  # GiB to plan for instead of nvidia-smi's figure
    base_steps: int | None = Field(None, ge=1)  # also render the base model, without LoRAs, at its N-step schedule
    force: bool = False


@dataclass(frozen=True)
class StepRecord:
    """One scheduler step as it ran: from `sigma` to `sigma_next`, with these adapters active."""

    step: int
    sigma: float
    sigma_next: float
    adapters: tuple[str, ...]


@dataclass(frozen=True)
class InferResult:
    image: Path
    trace: list[StepRecord]
    summary: dict  # the same record the PNG carries under the "glance" key
    seconds: float  # the pipeline call (denoising and decoding)
    load_seconds: float  # loading the pipeline and the LoRAs
    base: InferResult | None = None  # the base-model render of --base-steps


def options_from_manifest(output_dir: Path, **overrides) -> InferOptions:
    """Options from `<output_dir>/glance.json`, with `overrides` (None meaning "not given") on top.

    Without a manifest, `slow_lora`, `fast_lora`, `model` and `lists` must all be given.
    """
    overrides = {key: value for key, value in overrides.items() if value is not None}
    manifest_path = Path(output_dir) / MANIFEST_NAME
    values: dict = {}
    if manifest_path.is_file():
        manifest = load_manifest(manifest_path)
        values = {
            "model": manifest.model,
            "lists": manifest.lists,
            "width": manifest.resolution,
            "height": manifest.resolution,
        }
        if "model" not in overrides:
            values["family"] = manifest.family
        if manifest.train_guidance is not None:  # FLUX samples with the guidance it was trained at
            values["guidance"] = manifest.train_guidance
        for phase in ADAPTERS:
            if f"{phase}_lora" not in overrides:
                values[f"{phase}_lora"] = manifest.lora_dir(phase, manifest_path)
    elif "slow_lora" not in overrides or "fast_lora" not in overrides:
        raise GlanceError(f"no run manifest at {manifest_path}; run `glance train` first or pass --slow and --fast")
    else:
        missing = [
            flag
            for key, flag in (("model", "--model"), ("lists", "--slow-timesteps and --fast-timesteps"))
            if key not in overrides
        ]
        if missing:
            raise GlanceError(f"without a run manifest at {manifest_path}, pass {' and '.join(missing)} too")
    values.update(overrides)
    try:
        return InferOptions(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise GlanceError(f"invalid option {where}: {first['msg']}") from None


def base_image_path(out: Path, steps: int) -> Path:
    """Where --base-steps puts the base model's image: beside --out, e.g. glance-base50.png."""
    out = Path(out)
    return out.with_name(f"{out.stem}-base{steps}{out.suffix}")


def sampling_plan(options: InferOptions, family: Family, device: str) -> SamplingPlan:
    """The memory plan for this run on `device`: quantization and offload (glance/memory.py)."""
    return plan_sampling(
        lambda: model_sizes(options.model, family),
        device=device,
        width=options.width,
        height=options.height,
        quantize=options.quantize,
        cpu_offload=options.cpu_offload,
        gpu_memory=options.gpu_memory,
    )


def _out_of_memory_advice(run):
    """A CUDA out-of-memory error while sampling ends as one line naming the next lighter plan."""

    @functools.wraps(run)
    def wrapper(options: InferOptions):
        try:
            return run(options)
        except Exception as exc:
            if not is_out_of_memory(f"{type(exc).__name__}: {exc}"):
                raise
            family = resolve_family(options.model, options.family)
            raise GlanceError(sampling_oom_message(sampling_plan(options, family, "cuda"))) from None

    return wrapper


@_out_of_memory_advice
def run_infer(options: InferOptions) -> InferResult:
    """Sample the slow and fast LoRAs in one pipeline call and write the PNG (and the base image)."""
    import torch

    from glance.hub import resolve_model

    model_dir = resolve_model(options.model).path_or_id  # a Hub model: from the cache, else downloaded once
    family = resolve_family(model_dir, options.family)
    loras = {"slow": _read_lora("slow", options.slow_lora), "fast": _read_lora("fast", options.fast_lora)}
    base_out = base_image_path(options.out, options.base_steps) if options.base_steps else None
    for target in (options.out, base_out):
        if target is not None:
            _check_out(target, options.force)
    device = _resolve_device(options.device)
    dtype = _resolve_dtype(options.dtype, device)
    if options.cpu_offload and device == "cpu":
        raise GlanceError("--cpu-offload needs a cuda or mps device")
    memory = sampling_plan(options, family, device)

    started = time.perf_counter()
    pipe = _load_pipeline(model_dir, family, getattr(torch, dtype), memory)
    for lora in loras.values():
        lora.check_fits(pipe.transformer, options.model)
    if memory.cpu_offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    load_seconds = time.perf_counter() - started
    call_kwargs = {
        "prompt": options.prompt,
        "width": options.width,
        "height": options.height,
        **_guidance_kwargs(options, family, pipe),
    }
    common = {
        "glance_version": __version__,
        "prompt": options.prompt,
        "negative_prompt": call_kwargs.get("negative_prompt"),
        "seed": options.seed,
        "model": options.model,
        "family": family.name,
        "guidance": call_kwargs.get("guidance_scale"),
        "true_cfg": call_kwargs.get("true_cfg_scale"),
        "device": device,
        "dtype": dtype,
        "quantize": memory.quantize,
        "memory_plan": memory.describe(),
    }

    # The base model renders first, before any LoRA layer exists, with the pipeline's own scheduler.
    base, base_image = None, None
    if options.base_steps:
        base_image, trace, seconds = _render(
            pipe, {**call_kwargs, "num_inference_steps": options.base_steps}, options.seed
        )
        summary = {**common, "kind": "base", **_trace_summary(trace, base_image), "loras": {}}
        base = InferResult(base_out, trace, summary, seconds, load_seconds)

    started = time.perf_counter()
    adapter_weights = {name: lora.load_into(pipe, name) for name, lora in loras.items()}
    pipe.set_adapters("slow", adapter_weights=adapter_weights["slow"])
    load_seconds += time.perf_counter() - started

    lists = options.lists
    pipe.scheduler = exact_scheduler(pipe.scheduler.config)
    last_slow_step = switch_step(lists) - 1

    def switch_to_fast(pipe, step, timestep, callback_kwargs):
        if step == last_slow_step:
            pipe.set_adapters("fast", adapter_weights=adapter_weights["fast"])
        return {}

    image, trace, seconds = _render(
        pipe,
        {
            **call_kwargs,
            "sigmas": lists.sigmas,
            "num_inference_steps": len(lists.sigmas),
            "callback_on_step_end": switch_to_fast,
        },
        options.seed,
    )
    _check_trace(trace, lists)
    summary = {
        **common,
        "kind": "glance",
        "slow_timesteps": list(lists.slow),
        "fast_timesteps": list(lists.fast),
        **_trace_summary(trace, image),
        "loras": {name: lora.describe(pipe.transformer, name) for name, lora in loras.items()},
    }

    # Written last, so a failure anywhere above leaves no image behind.
    if base is not None:
        write_atomic(base.image, _png_bytes(base_image, base.summary))
    write_atomic(options.out, _png_bytes(image, summary))
    return InferResult(options.out, trace, summary, seconds, load_seconds, base)


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


# LoRA files

_LORA_KEY = re.compile(r"^transformer\.(?P<module>.+)\.lora_(?P<part>[AB])\.weight$")


@dataclass
class _LoraFile:
    """A diffusers-format transformer LoRA, read and checked before the model is touched."""

    folder: Path
    weights: dict  # module name -> {"A": tensor, "B": tensor}
    alpha: float | None  # the training alpha when the file's metadata lacks it (diffusers then assumes rank)
    alpha_from: str

    @property
    def file(self) -> Path:
        return self.folder / WEIGHTS_NAME

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
        """Path, rank, alpha (and where it was read) and the scale the adapter ran with."""
        layer = transformer.get_submodule(next(iter(self.weights)))
        return {
            "path": str(self.folder),
            "rank": layer.r[adapter_name],
            "alpha": self.alpha if self.alpha is not None else layer.lora_alpha[adapter_name],
            "alpha_from": self.alpha_from,
            "scale": layer.scaling[adapter_name],
        }


def _read_lora(name: str, folder: Path) -> _LoraFile:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    flag = f"--{name}"
    if not folder.is_dir():
        raise GlanceError(f"{flag}: {folder} is not a folder")
    path = folder / WEIGHTS_NAME
    if not path.is_file():
        raise GlanceError(f"{flag}: {folder} has no {WEIGHTS_NAME}; point it at a LoRA folder written by glance train")
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
    return _LoraFile(folder, weights, *_training_alpha(path, rank))


def _training_alpha(path: Path, rank: int) -> tuple[float | None, str]:
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


# Pipeline


def _check_out(path: Path, force: bool) -> None:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise GlanceError(f"--out {path}: the image is written as PNG; give a .png path")
    if path.is_dir():
        raise GlanceError(f"--out {path} is a folder; give a .png path")
    if path.exists() and not force:
        raise GlanceError(f"{path} exists; pass --force to overwrite it")
    check_writable_dir(path.parent)


def _resolve_device(choice: str) -> str:
    import torch

    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    if choice == "auto":
        return next(device for device, present in available.items() if present)
    if not available[choice]:
        raise GlanceError(f"--device {choice}: no {choice} device is available")
    return choice


def _resolve_dtype(choice: str, device: str) -> str:
    if choice != "auto":
        return choice
    # Accelerators run these models in bfloat16 (their native precision); CPUs lack fast bfloat16 kernels.
    return "float32" if device == "cpu" else "bfloat16"


def _load_pipeline(model: str, family: Family, dtype, memory: SamplingPlan | None = None):
    import warnings

    import diffusers

    pipeline_class = getattr(diffusers, family.pipeline_class)
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


def _guidance_kwargs(options: InferOptions, family: Family, pipe) -> dict:
    """guidance_scale / true_cfg_scale / negative_prompt for the pipeline call.

    FLUX reads guidance_scale as its guidance embedding, SD3 as its CFG scale. Qwen-Image has no
    guidance input and samples with true CFG against a negative prompt instead, so there
    guidance_scale is only passed when asked for.
    """
    recipe = family.recipe
    true_cfg = options.true_cfg if options.true_cfg is not None else recipe.true_cfg
    negative = options.negative_prompt if options.negative_prompt is not None else recipe.negative_prompt
    accepted = inspect.signature(pipe.__call__).parameters
    kwargs: dict = {}
    if true_cfg is None or options.guidance is not None:
        kwargs["guidance_scale"] = options.guidance if options.guidance is not None else recipe.guidance
    if true_cfg is not None:
        if "true_cfg_scale" not in accepted:
            raise GlanceError(f"--true-cfg: {family.pipeline_class} has no true CFG; use --guidance")
        kwargs["true_cfg_scale"] = true_cfg
    if negative is not None:
        kwargs["negative_prompt"] = negative
    return kwargs


def _render(pipe, call_kwargs: dict, seed: int):
    """Run the pipeline once, recording each scheduler step as it happens; (image, trace, seconds)."""
    import torch

    scheduler = pipe.scheduler
    stepped: list[tuple] = []
    step = scheduler.step

    def recording_step(*args, **kwargs):
        adapters = tuple(pipe.get_active_adapters())  # the adapters the model call before this step ran with
        output = step(*args, **kwargs)
        # The scheduler's own sigma tensor and the index it just stepped from (step() has advanced it);
        # read out after the run, so recording adds no device sync to the loop.
        stepped.append((scheduler.step_index - 1, scheduler.sigmas, adapters))
        return output

    scheduler.step = recording_step
    try:
        started = time.perf_counter()
        # A CPU generator gives the same starting noise on every device.
        generator = torch.Generator("cpu").manual_seed(seed)
        image = pipe(**call_kwargs, generator=generator).images[0]
        seconds = time.perf_counter() - started
    finally:
        del scheduler.step
    trace = [
        StepRecord(index, float(sigmas[index]), float(sigmas[index + 1]), adapters)
        for index, sigmas, adapters in stepped
    ]
    return image, trace, seconds


def _check_trace(trace: list[StepRecord], lists: TimestepLists) -> None:
    """Refuse an image whose sampling differed from training: other sigmas, or the wrong LoRA at a step."""
    executed = [record.sigma for record in trace]
    if executed != lists.sigmas or trace[-1].sigma_next != 0.0:
        raise GlanceError(f"the pipeline stepped through sigmas {executed}, not the trained {lists.sigmas}")
    expected = [("slow",)] * len(lists.slow) + [("fast",)] * len(lists.fast)
    active = [record.adapters for record in trace]
    if active != expected:
        raise GlanceError(f"the adapters per step were {active}, expected slow then fast")


def _trace_summary(trace: list[StepRecord], image) -> dict:
    return {
        "width": image.width,
        "height": image.height,
        "sigmas": [record.sigma for record in trace],
        "steps": [
            {"step": r.step, "sigma": r.sigma, "sigma_next": r.sigma_next, "adapters": list(r.adapters)} for r in trace
        ],
    }


# PNG


def _png_bytes(image, summary: dict) -> bytes:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(PNG_PARAMETERS_KEY, parameters_line(summary))  # tEXt, or iTXt when not Latin-1
    info.add_text(PNG_GLANCE_KEY, json.dumps(summary, sort_keys=True))
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
