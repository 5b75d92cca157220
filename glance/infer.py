"""`glance infer`: the options of a run from its manifest, and the run: check, plan, render, write the sheet.

The outputs are checked before anything loads; the memory plan is made for the device; then one
process renders every prompt x seed (glance/render.py), or --num-processes spreads them over several
(glance/spread.py). With --compare the contact sheet is written last. A CUDA out-of-memory error
ends as one line naming the next lighter plan.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from glance.batch import plan_images, sheet_path
from glance.families import GlanceError, model_schedule, resolve_family
from glance.files import check_writable_dir
from glance.infer_options import DEFAULT_IMAGE_NAME, SAMPLES_DIR, InferOptions
from glance.loras import read_pair
from glance.manifest import MANIFEST_NAME, PHASES, load_manifest
from glance.memory.plans import is_out_of_memory, sampling_oom_message
from glance.progress import Reporter
from glance.render import ImageResult, render_images, result_line
from glance.sampler import resolve_device, sampling_plan
from glance.spread import render_spread

__all__ = ["InferRun", "options_from_manifest", "run_infer"]


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

    The images go to OUTPUT_DIR/samples/ unless `out` says otherwise (where `glance push` looks for them).
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
        values["out"] = Path(output_dir) / SAMPLES_DIR / DEFAULT_IMAGE_NAME  # the run's renders stay with it
        for phase in PHASES:
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
def run_infer(
    options: InferOptions,
    reporter: Reporter | None = None,
    *,
    column_notes: Callable[[list[ImageResult]], dict[int, str]] | None = None,
) -> InferRun:
    """Load once, sample every prompt x seed (and the base model with --compare), write the PNGs and the sheet.

    Each image is written as soon as it is sampled and checked (its base image with it), so an
    interrupted run keeps the images it finished; a failed check leaves that image unwritten.
    `column_notes` reads the finished images and gives a line under each column of the sheet (by
    column index), e.g. a judge's score.
    """
    from glance.hub import resolve_model

    reporter = reporter or Reporter()
    # A Hub model comes from the cache, else it is downloaded once, here; the records keep its hub id.
    model_dir = resolve_model(options.model, revision=options.model_revision).path_or_id
    family = resolve_family(model_dir, options.family)
    loras = read_pair(options.slow_lora, options.fast_lora)
    jobs = plan_images(options.out, options.prompts, options.seeds, options.compare)
    sheet = sheet_path(options.out) if options.compare else None
    for job in jobs:
        _check_out(job.out, options.force)
        for base_out in job.base_outs.values():
            _check_out(base_out, options.force)
    if sheet is not None:
        _check_out(sheet, options.force)
    device = resolve_device(options.device)
    if options.cpu_offload and device == "cpu":
        raise GlanceError("--cpu-offload needs a cuda or mps device")
    memory = sampling_plan(options, family, device, model_dir)
    reporter.message(memory.describe())
    multiple = family.patch_size * model_schedule(model_dir, family).vae_scale_factor
    if options.width % multiple or options.height % multiple:  # the pipeline rounds down without a word
        reporter.result(
            f"note: {family.name} renders sizes in multiples of {multiple}: {options.width}x{options.height} "
            f"becomes {options.width // multiple * multiple}x{options.height // multiple * multiple}"
        )

    spread = f", {options.num_processes} processes" if options.num_processes > 1 else ""
    reporter.message(
        f"loading {options.model} and the slow + fast LoRAs ({device}{spread}); {len(jobs)} image(s) to render"
    )
    if options.num_processes > 1:
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

        write_compare_sheet(images, sheet, column_notes(images) if column_notes is not None else None)
        reporter.result(f"wrote {sheet} (base model left, glance right; {len(images)} rows)")
    return InferRun(images, load_seconds, sheet, options.num_processes)


def _check_out(path: Path, force: bool) -> None:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise GlanceError(f"--out {path}: the image is written as PNG; give a .png path")
    if path.is_dir():
        raise GlanceError(f"--out {path} is a folder; give a .png path")
    if path.exists() and not force:
        raise GlanceError(f"{path} exists; pass --force to overwrite it")
    check_writable_dir(path.parent)
