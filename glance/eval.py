"""`glance eval`: is this pair worth using? Render the columns, score every image, and say so with intervals.

The flow: check the runs (finished, one base model) and the scorers (their models found before any
render) -> plan the columns and their images (glance/eval_plan.py) -> take base and schedule images
from the render cache, render the rest in one process (glance/eval_render.py) or several (--num-processes)
-> score each image (glance/scorers.py) -> means, intervals, paired comparisons and the verdict
(glance/eval_stats.py) -> eval.json, eval.md, the sheet and the table (glance/eval_report.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from glance.eval_plan import (
    EvalColumn,
    EvalOptions,
    EvalTask,
    default_cache,
    load_runs,
    plan_columns,
    plan_tasks,
    with_cache,
)
from glance.eval_render import EvalImage, EvalProgress, from_cache
from glance.families import GlanceError
from glance.files import check_writable_dir
from glance.progress import Reporter
from glance.scorers import SCORERS, ScoreTarget, TrainingImage

JSON_NAME = "eval.json"
MD_NAME = "eval.md"
SHEET_NAME = "eval-compare.png"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass
class EvalResult:
    out: Path
    report: dict  # eval.json's content
    table: str  # what stdout shows


def run_eval(options: EvalOptions, reporter: Reporter | None = None) -> EvalResult:
    from glance.eval_prompts import default_prompts, is_shapes_model
    from glance.eval_report import build_report, render_table, write_outputs
    from glance.files import folder_fingerprint
    from glance.hub import resolve_model
    from glance.infer import options_from_manifest
    from glance.sampler import resolve_device, resolve_dtype
    from glance.scorer_models import DEFAULT_SCORER_MODELS, scorer_folder

    reporter = reporter or Reporter()
    runs = [Path(run).resolve() for run in options.runs]
    manifests = load_runs(runs)
    source = resolve_model(manifests[0].model, revision=manifests[0].model_revision)
    shapes_model = is_shapes_model(source.folder)
    prompts = options.prompts if options.prompts is not None else default_prompts(source.folder)
    if not prompts:
        raise GlanceError("no prompts to evaluate")
    scorers = list(dict.fromkeys(options.scorers or (["judge"] if shapes_model else ["clip", "dino"])))
    unknown = [name for name in scorers if name not in SCORERS]
    if unknown:
        raise GlanceError(f"--scorer {unknown[0]}: unknown scorer; known: {', '.join(SCORERS)}")
    stray = sorted(set(options.scorer_models) - set(scorers))
    if stray:
        raise GlanceError(f"--scorer-model {stray[0]}=...: the {stray[0]} scorer is not chosen (--scorer {stray[0]})")
    if "judge" in scorers:
        _check_judge_prompts(prompts)
    # The scorers' models before any render: one that cannot be had offline fails in seconds.
    scorer_models = {name: options.scorer_models.get(name, DEFAULT_SCORER_MODELS[name])
                     for name in scorers if name != "judge"}  # fmt: skip
    scorer_dirs = {name: scorer_folder(model, scorer=name) for name, model in scorer_models.items()}
    trainings = {str(run): _training_image(run) for run in runs}

    out = Path(options.out) if options.out is not None else runs[0] / "eval"
    out = out.resolve()
    if (out / JSON_NAME).exists() and not options.force:
        raise GlanceError(f"{out / JSON_NAME} exists; pass --force to evaluate again into {out}")
    check_writable_dir(out)

    infer_options = {
        str(run): options_from_manifest(run, prompts=prompts, seeds=options.seeds, device=options.device,
                                        dtype=options.dtype, num_processes=options.num_processes)  # fmt: skip
        for run in runs
    }
    base = infer_options[str(runs[0])]
    device = resolve_device(options.device)
    columns = plan_columns(runs, manifests, options.reference, options.lora_scale)
    identity = {
        "model": base.model, "revision": base.model_revision,
        "files": folder_fingerprint(source.folder) if source.folder is not None else None,
        "family": manifests[0].family, "width": base.width, "height": base.height, "guidance": base.guidance,
        "true_cfg": base.true_cfg, "negative_prompt": base.negative_prompt, "dtype": resolve_dtype(base.dtype, device),
        "device": device.split(":")[0], "quantize": base.quantize,
    }  # fmt: skip
    cache = Path(options.cache) if options.cache is not None else default_cache()
    pairs = {
        run: {"loras": [folder_fingerprint(o.slow_lora), folder_fingerprint(o.fast_lora)], "scale": options.lora_scale,
              "pair_guidance": o.guidance}  # fmt: skip
        for run, o in infer_options.items()
    }
    tasks = with_cache(plan_tasks(columns, prompts, options.seeds, out), cache, identity, pairs)

    started = time.perf_counter()
    images: list[EvalImage] = []
    to_render: list[EvalTask] = []
    for task in tasks:
        cached = from_cache(task)
        if cached is not None:
            images.append(cached)
        else:
            to_render.append(task)
    reporter.message(
        f"eval: {len(columns)} columns x {len(prompts)} prompts x {len(options.seeds)} seeds = {len(tasks)} images; "
        f"{len(tasks) - len(to_render)} from the render cache ({cache}), {len(to_render)} to render on {device}"
    )
    load_seconds = 0.0
    if to_render:
        rendered, load_seconds = _render(options, base, infer_options, to_render, device, reporter)
        images += rendered
    reporter.done()
    render_seconds = time.perf_counter() - started

    order = {column.name: i for i, column in enumerate(columns)}
    images.sort(key=lambda image: (order[image.column], image.index))
    reporter.message(f"scoring {len(images)} images ({', '.join(['ssim', *scorers])})")
    scores = _score(columns, images, runs, trainings, scorers, scorer_dirs, device)
    report = build_report(
        options=options, manifests=manifests, runs=runs, columns=columns, images=images, scores=scores,
        prompts=prompts, scorers=scorers, scorer_models=scorer_models, out=out, load_seconds=load_seconds,
        render_seconds=render_seconds, trainings=trainings,
    )  # fmt: skip
    write_outputs(report, images, columns, out, options.sheet_rows)
    return EvalResult(out=out, report=report, table=render_table(report))


def _render(options: EvalOptions, base, infer_options: dict, tasks: list[EvalTask], device: str, reporter):
    """One process (one progress bar over every render), or --num-processes workers (a slot each)."""
    if options.num_processes > 1:
        from glance.spread import render_eval_spread

        return render_eval_spread(base, infer_options, tasks, device, reporter, options.lora_scale)
    from glance.eval_render import render_eval_tasks

    return render_eval_tasks(base, infer_options, tasks, device, reporter, lora_scale=options.lora_scale,
                             progress=EvalProgress(total=len(tasks)))  # fmt: skip


def _score(columns: list[EvalColumn], images: list[EvalImage], runs: list[Path], trainings, scorers, dirs, device):
    """Every image's scores; a glance column's pull toward its own pair, a base column's toward each pair."""
    from glance.scorers import score_images

    reference = columns[0].name
    references = {(i.prompt, i.seed): i.path for i in images if i.column == reference}
    glance = [c for c in columns if c.kind == "glance"]
    first = str(runs[0])

    def pulls(column: EvalColumn) -> dict[str, str]:
        if column.kind == "glance":
            return {"": str(column.run)}
        return {"": first, **{f"[{c.name}]": str(c.run) for c in glance if str(c.run) != first}}

    by_name = {c.name: c for c in columns}
    targets = [ScoreTarget(prompt=i.prompt, seed=i.seed, path=i.path, pulls=pulls(by_name[i.column])) for i in images]
    return score_images(targets, references, trainings, scorers, dirs, device)


def _training_image(run: Path) -> TrainingImage:
    """The image and caption the run trained on, as staged in its dataset folder."""
    dataset = Path(run) / "dataset"
    found = sorted(p for p in dataset.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if dataset.is_dir() else []
    if not found:
        raise GlanceError(f"-o {run}: no training image in {dataset}; is it a glance run folder?")
    caption = found[0].with_suffix(".txt")
    text = caption.read_text(encoding="utf-8").strip() if caption.is_file() else ""
    return TrainingImage(path=found[0], caption=text)


def _check_judge_prompts(prompts: list[str]) -> None:
    from glance import shapes

    for prompt in prompts:
        try:
            shapes.Caption.parse(prompt)
        except ValueError:
            raise GlanceError(
                f"--scorer judge reads the shapes model's captions only; {prompt!r} is not one of them"
            ) from None
