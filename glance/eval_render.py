"""The images of `glance eval` in one process: one pipeline, the base columns, the schedule columns, each pair.

The order follows what the pipeline holds: the base model at its own schedules first (no LoRA layer
yet), then the exact scheduler for the trained sigmas without LoRA, then each run's two LoRAs,
loaded, rendered exactly as `glance infer` renders them (glance/sampler.py's render_glance, the
trace checked), and removed again. Every image is a PNG with glance's usual record; a base or
schedule image goes to the render cache first (with its seconds beside it) and is copied from there.

torch is imported inside the functions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from glance.eval_plan import EvalTask
from glance.files import write_atomic
from glance.infer_options import InferOptions
from glance.progress import Reporter, library_output
from glance.records import png_bytes, trace_summary


class EvalImage(BaseModel):
    """One rendered (or cached) image of an eval column."""

    model_config = ConfigDict(frozen=True)

    column: str
    index: int
    prompt: str
    seed: int
    path: Path
    seconds: float  # the pipeline call when it was rendered
    cached: bool = False  # taken from the render cache, not rendered by this eval
    summary: dict  # the PNG's record


@dataclass
class EvalProgress:
    """One bar over every render of the eval: images done of all, and the current image's step."""

    total: int  # images to render
    step: int = 0  # images done (what a log's line per tenth counts)
    what: str = ""
    image_step: int = 0
    steps: int = 0
    started: float = field(default_factory=time.monotonic)
    key: ClassVar[str] = "eval"
    log_tenths: ClassVar[bool] = True

    @property
    def _fraction(self) -> float:
        return (self.step + (self.image_step / self.steps if self.steps else 0)) / max(1, self.total)

    def render(self) -> str:
        elapsed = int(time.monotonic() - self.started)
        width = 20
        filled = int(self._fraction * width)
        bar = "#" * filled + "." * (width - filled)
        return (f"eval [{bar}] {self.step}/{self.total} images  {elapsed // 60}:{elapsed % 60:02d}  "
                f"{self.what} step {self.image_step}/{self.steps}")  # fmt: skip


def cache_meta(path: Path) -> Path:
    return path.with_suffix(".json")


def from_cache(task: EvalTask) -> EvalImage | None:
    """The cached image of a base or schedule task, copied to its place in the eval folder."""
    from glance.records import read_png_parameters

    if task.cache is None or not task.cache.is_file() or not cache_meta(task.cache).is_file():
        return None
    seconds = json.loads(cache_meta(task.cache).read_text())["seconds"]
    task.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(task.out, task.cache.read_bytes())
    return EvalImage(column=task.column, index=task.index, prompt=task.prompt, seed=task.seed, path=task.out,
                     seconds=seconds, cached=True, summary=read_png_parameters(task.out))  # fmt: skip


def render_eval_tasks(
    base: InferOptions,
    runs: dict[str, InferOptions],
    tasks: list[EvalTask],
    device: str,
    reporter: Reporter,
    *,
    lora_scale: float = 1.0,
    progress: EvalProgress | None = None,
    on_image: Callable[[EvalImage], None] | None = None,
) -> tuple[list[EvalImage], float]:
    """Render `tasks` with one pipeline (base model of `base`); `runs` maps a run folder to its options."""
    import torch

    from glance.families import resolve_family
    from glance.hub import resolve_model
    from glance.loras import read_pair
    from glance.render import call_setup, image_record
    from glance.sampler import (
        exact_scheduler,
        load_pipeline,
        render_base,
        render_exact,
        render_glance,
        resolve_dtype,
        sampling_plan,
    )

    progress = progress or EvalProgress(total=len(tasks))
    model_dir = resolve_model(base.model, revision=base.model_revision).path_or_id
    family = resolve_family(model_dir, base.family)
    memory = sampling_plan(base, family, device, model_dir)
    dtype = resolve_dtype(base.dtype, device)
    results: list[EvalImage] = []

    def step() -> None:
        progress.image_step += 1
        reporter.progress(progress)

    def start(task: EvalTask) -> None:
        progress.what, progress.image_step, progress.steps = f"{task.column} seed {task.seed}", 0, task.steps
        reporter.progress(progress)

    def finish(task: EvalTask, rendered, summary: dict) -> None:
        payload = png_bytes(rendered.image, summary)
        if task.cache is not None:  # the cache first: the eval folder's copy is the cache's
            write_atomic(task.cache, payload)
            write_atomic(cache_meta(task.cache), json.dumps({"seconds": rendered.seconds}))
        write_atomic(task.out, payload)
        image = EvalImage(column=task.column, index=task.index, prompt=task.prompt, seed=task.seed, path=task.out,
                          seconds=rendered.seconds, summary=summary)  # fmt: skip
        results.append(image)
        progress.step += 1
        reporter.progress(progress)
        if on_image is not None:
            on_image(image)

    with library_output(reporter.verbose):
        started = time.perf_counter()
        pipe = load_pipeline(model_dir, family, getattr(torch, dtype), memory)
        if memory.cpu_offload:
            pipe.enable_model_cpu_offload(device=device)
        else:
            pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        load_seconds = time.perf_counter() - started
        call_kwargs, common = call_setup(base, family, pipe, device, dtype, memory)

        for task in (t for t in tasks if t.kind == "base"):
            start(task)
            rendered = render_base(pipe, {**call_kwargs, "prompt": task.prompt}, task.steps, task.seed, step)
            summary = {**image_record(task.prompt, task.seed, common), "kind": "base",
                       **trace_summary(rendered.trace, rendered.image), "loras": {}}  # fmt: skip
            finish(task, rendered, summary)

        pipe.scheduler = exact_scheduler(pipe.scheduler.config)
        for task in (t for t in tasks if t.kind == "schedule"):
            start(task)
            rendered = render_exact(pipe, {**call_kwargs, "prompt": task.prompt}, task.sigmas, task.seed, step)
            summary = {**image_record(task.prompt, task.seed, common), "kind": "schedule",
                       **trace_summary(rendered.trace, rendered.image), "loras": {}}  # fmt: skip
            finish(task, rendered, summary)

        for run, options in runs.items():
            mine = [t for t in tasks if t.kind == "glance" and str(t.run) == run]
            if not mine:
                continue
            started = time.perf_counter()
            loras = read_pair(options.slow_lora, options.fast_lora)
            for lora in loras.values():
                lora.check_fits(pipe.transformer, options.model)
            weights = {name: lora.load_into(pipe, name) * lora_scale for name, lora in loras.items()}
            load_seconds += time.perf_counter() - started
            run_kwargs, run_common = call_setup(options, family, pipe, device, dtype, memory)
            lists = options.lists
            for task in mine:
                start(task)
                rendered = render_glance(pipe, {**run_kwargs, "prompt": task.prompt}, lists, weights, task.seed, step)
                summary = {
                    **image_record(task.prompt, task.seed, run_common),
                    "kind": "glance",
                    "slow_timesteps": list(lists.slow),
                    "fast_timesteps": list(lists.fast),
                    **trace_summary(rendered.trace, rendered.image),
                    "loras": {name: lora.describe(pipe.transformer, name) for name, lora in loras.items()},
                }
                finish(task, rendered, summary)
            pipe.delete_adapters(list(loras))
    return results, load_seconds
