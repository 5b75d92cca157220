"""The diffusers boundary: one pipeline, the exact trained sigmas, the slow -> fast LoRA switch.

The pipeline and both LoRAs load once; then every prompt x seed is sampled by one pipeline call
each. The scheduler is rebuilt without any shifting, so it steps through exactly the sigmas
SimpleTuner trained on (slow then fast, then the 0 the scheduler appends), and a step-end callback
swaps the "slow" adapter for the "fast" one after the last slow step. What actually ran (the sigma
of each step and the adapter active for it) is recorded at the scheduler, checked for every image,
and written into its PNG. With --compare the base model renders each prompt x seed first, at its
own N-step schedule, before any LoRA layer exists.

torch, diffusers and PIL are imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from glance import __version__
from glance.batch import ImageJob, base_image_path, plan_images, sheet_path
from glance.comfyui import PNG_PROMPT_KEY, png_prompt
from glance.families import Family, GlanceError, read_json, resolve_family
from glance.files import check_writable_dir, write_atomic
from glance.manifest import MANIFEST_NAME, WEIGHTS_NAME, load_manifest
from glance.memory.pipeline_quantization import is_quantized, pipeline_quantization_config
from glance.memory.plans import QuantizeChoice, SamplingPlan, is_out_of_memory, plan_sampling, sampling_oom_message
from glance.memory.sizes import model_sizes
from glance.progress import ImageProgress, Reporter, library_output
from glance.schedule import TimestepLists, switch_step

__all__ = [  # base_image_path is part of this module's interface (the name of a --compare base image)
    "InferOptions",
    "InferRun",
    "ImageResult",
    "base_image_path",
    "options_from_manifest",
    "run_infer",
]

ADAPTERS = ("slow", "fast")
PNG_PARAMETERS_KEY = "parameters"  # the human-readable line A1111 / ComfyUI tools show
PNG_GLANCE_KEY = "glance"  # the full record as JSON
DEFAULT_SIZE = 1024  # without a manifest: the Glance paper's training resolution
SIMPLETUNER_CONFIG_NAME = "simpletuner_config.json"  # SimpleTuner writes it beside the LoRA it trains

DeviceChoice = Literal["auto", "cuda", "mps", "cpu"]
DtypeChoice = Literal["auto", "bfloat16", "float16", "float32"]


class InferOptions(BaseModel):
    """Everything one `glance infer` run needs; `options_from_manifest` fills it from a training run.

    `prompt=` and `seed=` (one image) are accepted for `prompts=[...]` and `seeds=[...]`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompts: list[str] = Field(min_length=1)
    model: str  # hub id or local diffusers folder
    model_revision: str | None = None  # a hub model's commit (the one trained on, from the manifest)
    family: str | None = None  # detected from the model when left out
    lists: TimestepLists  # the slow and fast lists the LoRAs were trained on
    slow_lora: Path
    fast_lora: Path
    out: Path = Path("glance.png")  # one image; several are numbered beside it (glance-001.png, ...)
    seeds: list[int] = Field([0], min_length=1)
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
    compare: list[int] | None = None  # also render the base model, without LoRAs, at each N-step schedule
    num_processes: int = Field(1, ge=1)  # processes (one pipeline and device each) sharing the images
    force: bool = False

    @model_validator(mode="before")
    @classmethod
    def _one_image(cls, values):
        if isinstance(values, dict):
            values = dict(values)
            if "prompt" in values:
                values["prompts"] = [values.pop("prompt")]
            if "seed" in values:
                values["seeds"] = [values.pop("seed")]
        return values

    @field_validator("compare", mode="before")
    @classmethod
    def _compare_steps(cls, compare):
        steps = [compare] if isinstance(compare, int) else compare  # one count, as before lists
        if steps is not None and (not steps or min(steps) < 1 or len(set(steps)) != len(steps)):
            raise ValueError("compare takes distinct step counts of at least 1")
        return steps

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise ValueError("seeds must be distinct and not negative")
        return seeds


@dataclass(frozen=True)
class StepRecord:
    """One scheduler step as it ran: from `sigma` to `sigma_next`, with these adapters active."""

    step: int
    sigma: float
    sigma_next: float
    adapters: tuple[str, ...]


class ImageResult(BaseModel):
    """One image written: where, what, how long, and the record its PNG carries."""

    model_config = ConfigDict(frozen=True)

    image: Path
    prompt: str
    seed: int
    seconds: float  # the pipeline call (text encoding, denoising, decoding)
    denoise_seconds: float  # the denoising steps alone (first transformer call to the last scheduler step)
    summary: dict  # the same record the PNG carries under the "glance" key
    bases: list[ImageResult] = []  # --compare: the base model's images of the same prompt and seed, in order

    @property
    def base(self) -> ImageResult | None:  # the first --compare image (with one step count, the only one)
        return self.bases[0] if self.bases else None

    @property
    def trace(self) -> list[StepRecord]:
        return [StepRecord(s["step"], s["sigma"], s["sigma_next"], tuple(s["adapters"])) for s in self.summary["steps"]]


@dataclass(frozen=True)
class InferRun:
    images: list[ImageResult]  # in prompt-major order, as numbered
    load_seconds: float  # loading the pipeline and the LoRAs (the slowest process's, with several)
    sheet: Path | None = None  # --compare: the contact sheet
    processes: int = 1

    @property
    def image(self) -> Path:  # the first (with one prompt and seed, the only) image
        return self.images[0].image


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
        if "model" not in overrides:  # the model trained on, at the commit trained on
            values["family"] = manifest.family
            values["model_revision"] = manifest.model_revision
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


def sampling_plan(options: InferOptions, family: Family, device: str, model: str | None = None) -> SamplingPlan:
    """The memory plan for this run on `device`: quantization and offload (glance/memory.py)."""
    return plan_sampling(
        lambda: model_sizes(model or options.model, family),
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
    def wrapper(options: InferOptions, *args, **kwargs):
        try:
            return run(options, *args, **kwargs)
        except Exception as exc:
            if not is_out_of_memory(f"{type(exc).__name__}: {exc}"):
                raise
            family = resolve_family(options.model, options.family)
            raise GlanceError(sampling_oom_message(sampling_plan(options, family, "cuda"))) from None

    return wrapper


@_out_of_memory_advice
def run_infer(options: InferOptions, reporter: Reporter | None = None) -> InferRun:
    """Load once, sample every prompt x seed (and the base model with --compare), write the PNGs and the sheet.

    Each image is written as soon as it is sampled and checked (its base image with it), so an
    interrupted run keeps the images it finished; a failed check leaves that image unwritten.
    """
    from glance.hub import resolve_model

    reporter = reporter or Reporter()
    # A Hub model comes from the cache, else it is downloaded once, here; the records keep its hub id.
    model_dir = resolve_model(options.model, revision=options.model_revision).path_or_id
    family = resolve_family(model_dir, options.family)
    loras = {"slow": _read_lora("slow", options.slow_lora), "fast": _read_lora("fast", options.fast_lora)}
    jobs = plan_images(options.out, options.prompts, options.seeds, options.compare)
    sheet = sheet_path(options.out) if options.compare else None
    for job in jobs:
        _check_out(job.out, options.force)
        for base_out in job.base_outs.values():
            _check_out(base_out, options.force)
    if sheet is not None:
        _check_out(sheet, options.force)
    device = _resolve_device(options.device)
    if options.cpu_offload and device == "cpu":
        raise GlanceError("--cpu-offload needs a cuda or mps device")
    memory = sampling_plan(options, family, device, model_dir)
    reporter.message(memory.describe())

    spread = f", {options.num_processes} processes" if options.num_processes > 1 else ""
    reporter.message(
        f"loading {options.model} and the slow + fast LoRAs ({device}{spread}); {len(jobs)} image(s) to render"
    )
    if options.num_processes > 1:
        from glance.spread import render_spread

        images, load_seconds = render_spread(options, jobs, device, reporter)
    else:
        images, load_seconds = render_images(
            options,
            jobs,
            device,
            reporter,
            family=family,
            loras=loras,
            model_dir=model_dir,
            memory=memory,
            on_image=lambda r: reporter.result(result_line(r)),
        )
    if sheet is not None:
        from glance.sheet import write_compare_sheet

        write_compare_sheet(images, sheet)
        reporter.result(f"wrote {sheet} (base model left, glance right; {len(images)} rows)")
    return InferRun(images, load_seconds, sheet, options.num_processes)


def result_line(result: ImageResult) -> str:
    """The line printed when an image is written (its base image's line first)."""
    lines = []
    for base in result.bases:
        lines.append(f"wrote {base.image} (base model, {len(base.summary['steps'])} steps, {base.seconds:.1f} s)")
    prompt = result.prompt if len(result.prompt) <= 60 else result.prompt[:57] + "..."
    lines.append(
        f"wrote {result.image} ({len(result.summary['steps'])} steps, {result.seconds:.1f} s; "
        f"seed {result.seed}: {prompt})"
    )
    return "\n".join(lines)


def render_images(
    options: InferOptions,
    jobs: list[ImageJob],
    device: str,
    reporter: Reporter,
    *,
    family: Family | None = None,
    loras: dict | None = None,
    model_dir: str | None = None,
    memory: SamplingPlan | None = None,
    on_image: Callable[[ImageResult], None] | None = None,
) -> tuple[list[ImageResult], float]:
    """Load the pipeline and both LoRAs once and render `jobs` in order; (results, load seconds).

    The one loop both a single process and every process of --num-processes run (a process of
    --num-processes finds the model in the cache and plans for its own device).
    """
    import torch

    if model_dir is None:
        from glance.hub import resolve_model

        model_dir = resolve_model(options.model, revision=options.model_revision).path_or_id
    family = family or resolve_family(model_dir, options.family)
    loras = loras or {"slow": _read_lora("slow", options.slow_lora), "fast": _read_lora("fast", options.fast_lora)}
    memory = memory or sampling_plan(options, family, device, model_dir)
    dtype = _resolve_dtype(options.dtype, device)
    with library_output(reporter.verbose):
        started = time.perf_counter()
        pipe = _load_pipeline(model_dir, family, getattr(torch, dtype), memory)
        for lora in loras.values():
            lora.check_fits(pipe.transformer, options.model)
        if memory.cpu_offload:
            pipe.enable_model_cpu_offload(device=device)
        else:
            pipe.to(device)
        pipe.set_progress_bar_config(disable=not reporter.verbose)  # glance shows its own line per image
        load_seconds = time.perf_counter() - started
        call_kwargs = {"width": options.width, "height": options.height, **_guidance_kwargs(options, family, pipe)}
        common = {
            "negative_prompt": call_kwargs.get("negative_prompt"),
            "model": options.model,
            "family": family.name,
            "guidance": call_kwargs.get("guidance_scale"),
            "true_cfg": call_kwargs.get("true_cfg_scale"),
            "device": device,
            "dtype": dtype,
            "quantize": memory.quantize,
            "memory_plan": memory.describe(),
        }

        def record(job: ImageJob) -> dict:  # the record's first keys, in the order a reader expects
            return {"glance_version": __version__, "prompt": job.prompt, "seed": job.seed, **common}

        # The base model renders first, before any LoRA layer exists, with the pipeline's own scheduler.
        bases: dict[int, list[tuple]] = {job.index: [] for job in jobs}
        for job in jobs:
            for steps, base_out in job.base_outs.items():
                progress = ImageProgress(f"{base_out.name} (base model)", steps, _detail(job))
                image, trace, seconds, denoise = _render(
                    pipe,
                    {**call_kwargs, "prompt": job.prompt, "num_inference_steps": steps},
                    job.seed,
                    lambda progress=progress: (progress.advance(), reporter.progress(progress)),
                )
                summary = {**record(job), "kind": "base", **_trace_summary(trace, image), "loras": {}}
                bases[job.index].append((image, ImageResult(
                    image=base_out, prompt=job.prompt, seed=job.seed, seconds=seconds, denoise_seconds=denoise,
                    summary=summary,
                )))  # fmt: skip

        started = time.perf_counter()
        adapter_weights = {name: lora.load_into(pipe, name) for name, lora in loras.items()}
        load_seconds += time.perf_counter() - started

        lists = options.lists
        pipe.scheduler = exact_scheduler(pipe.scheduler.config)
        last_slow_step = switch_step(lists) - 1

        def switch_to_fast(pipe, step, timestep, callback_kwargs):
            if step == last_slow_step:
                pipe.set_adapters("fast", adapter_weights=adapter_weights["fast"])
            return {}

        results = []
        for job in jobs:
            pipe.set_adapters("slow", adapter_weights=adapter_weights["slow"])  # the last image ended on "fast"
            progress = ImageProgress(job.out.name, len(lists.sigmas), _detail(job))
            image, trace, seconds, denoise = _render(
                pipe,
                {
                    **call_kwargs,
                    "prompt": job.prompt,
                    "sigmas": lists.sigmas,
                    "num_inference_steps": len(lists.sigmas),
                    "callback_on_step_end": switch_to_fast,
                },
                job.seed,
                lambda progress=progress: (progress.advance(), reporter.progress(progress)),
            )
            _check_trace(trace, lists)
            summary = {
                **record(job),
                "kind": "glance",
                "slow_timesteps": list(lists.slow),
                "fast_timesteps": list(lists.fast),
                **_trace_summary(trace, image),
                # read after the call: each adapter's scale is set when set_adapters activates it
                "loras": {name: lora.describe(pipe.transformer, name) for name, lora in loras.items()},
            }
            job_bases = bases.pop(job.index)
            # Written once checked: a failure above leaves neither this image nor its base images behind.
            for base_image, base in job_bases:
                write_atomic(base.image, _png_bytes(base_image, base.summary))
            write_atomic(job.out, _png_bytes(image, summary))
            result = ImageResult(
                image=job.out, prompt=job.prompt, seed=job.seed, seconds=seconds, denoise_seconds=denoise,
                summary=summary, bases=[base for _, base in job_bases],
            )  # fmt: skip
            results.append(result)
            if on_image is not None:
                on_image(result)
    return results, load_seconds


def _detail(job: ImageJob) -> str:
    prompt = job.prompt if len(job.prompt) <= 40 else job.prompt[:37] + "..."
    return f"seed {job.seed}: {prompt}"


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


def _render(pipe, call_kwargs: dict, seed: int, on_step: Callable[[], None] | None = None):
    """Run the pipeline once, recording each scheduler step as it happens; (image, trace, seconds, denoise seconds).

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
    return image, trace, seconds, denoise


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
