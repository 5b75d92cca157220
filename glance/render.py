"""The images of one process: load the pipeline and both LoRAs once, then render every job in order.

With --compare the base model renders each prompt x seed first, at its own N-step schedule, before
any LoRA layer exists. Each image is written as soon as it is sampled and checked (its base images
with it). A single process and every process of --num-processes (glance/spread.py) run this loop.

torch is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from glance import __version__
from glance.batch import ImageJob
from glance.families import Family, resolve_family
from glance.files import write_atomic
from glance.infer_options import InferOptions
from glance.loras import LoraFile, read_pair
from glance.memory.plans import SamplingPlan
from glance.progress import ImageProgress, Reporter, library_output
from glance.records import png_bytes, trace_summary
from glance.sampler import (
    StepRecord,
    exact_scheduler,
    load_pipeline,
    render_base,
    render_glance,
    resolve_dtype,
    sampling_guidance,
    sampling_plan,
)


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
    loras: dict[str, LoraFile] | None = None,
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
    loras = loras or read_pair(options.slow_lora, options.fast_lora)
    memory = memory or sampling_plan(options, family, device, model_dir)
    dtype = resolve_dtype(options.dtype, device)
    with library_output(reporter.verbose):
        started = time.perf_counter()
        pipe = load_pipeline(model_dir, family, getattr(torch, dtype), memory)
        for lora in loras.values():
            lora.check_fits(pipe.transformer, options.model)
        if memory.cpu_offload:
            pipe.enable_model_cpu_offload(device=device)
        else:
            pipe.to(device)
        pipe.set_progress_bar_config(disable=not reporter.verbose)  # glance shows its own line per image
        load_seconds = time.perf_counter() - started
        call_kwargs, common = call_setup(options, family, pipe, device, dtype, memory)

        def record(job: ImageJob) -> dict:
            return image_record(job.prompt, job.seed, common)

        def advance(progress: ImageProgress) -> Callable[[], None]:  # called after each scheduler step
            return lambda: (progress.advance(), reporter.progress(progress))

        # The base model renders first, before any LoRA layer exists, with the pipeline's own scheduler.
        bases: dict[int, list[tuple]] = {job.index: [] for job in jobs}
        for job in jobs:
            for steps, base_out in job.base_outs.items():
                progress = ImageProgress(f"{base_out.name} (base model)", steps, _detail(job))
                rendered = render_base(pipe, {**call_kwargs, "prompt": job.prompt}, steps, job.seed, advance(progress))
                summary = {**record(job), "kind": "base", **trace_summary(rendered.trace, rendered.image), "loras": {}}
                bases[job.index].append((rendered.image, ImageResult(
                    image=base_out, prompt=job.prompt, seed=job.seed, seconds=rendered.seconds,
                    denoise_seconds=rendered.denoise_seconds, summary=summary,
                )))  # fmt: skip

        started = time.perf_counter()
        adapter_weights = {name: lora.load_into(pipe, name) for name, lora in loras.items()}
        load_seconds += time.perf_counter() - started

        lists = options.lists
        pipe.scheduler = exact_scheduler(pipe.scheduler.config)
        results = []
        for job in jobs:
            progress = ImageProgress(job.out.name, len(lists.sigmas), _detail(job))
            rendered = render_glance(
                pipe, {**call_kwargs, "prompt": job.prompt}, lists, adapter_weights, job.seed, advance(progress)
            )
            summary = {
                **record(job),
                "kind": "glance",
                "slow_timesteps": list(lists.slow),
                "fast_timesteps": list(lists.fast),
                **trace_summary(rendered.trace, rendered.image),
                # read after the call: each adapter's scale is set when set_adapters activates it
                "loras": {name: lora.describe(pipe.transformer, name) for name, lora in loras.items()},
            }
            job_bases = bases.pop(job.index)
            # Written once checked: a failure above leaves neither this image nor its base images behind.
            for base_image, base in job_bases:
                write_atomic(base.image, png_bytes(base_image, base.summary))
            write_atomic(job.out, png_bytes(rendered.image, summary))
            result = ImageResult(
                image=job.out, prompt=job.prompt, seed=job.seed, seconds=rendered.seconds,
                denoise_seconds=rendered.denoise_seconds, summary=summary, bases=[base for _, base in job_bases],
            )  # fmt: skip
            results.append(result)
            if on_image is not None:
                on_image(result)
    return results, load_seconds


def call_setup(options: InferOptions, family: Family, pipe, device: str, dtype: str, memory: SamplingPlan):
    """(the pipeline call's size and guidance arguments, the record's keys every image of the run shares)."""
    call_kwargs = {"width": options.width, "height": options.height, **sampling_guidance(options, family, pipe)}
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
    return call_kwargs, common


def image_record(prompt: str, seed: int, common: dict) -> dict:
    """The record's first keys, in the order a reader expects."""
    return {"glance_version": __version__, "prompt": prompt, "seed": seed, **common}


def _detail(job: ImageJob) -> str:
    prompt = job.prompt if len(job.prompt) <= 40 else job.prompt[:37] + "..."
    return f"seed {job.seed}: {prompt}"
