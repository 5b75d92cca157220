"""The whole path on the small model glance ships: train a pair on one image, judge what it draws.

The model (glance/models/shapes-flux, FLUX architecture, 64 px) draws the captioned shapes of
`glance.shapes`. The demo trains the slow and fast LoRAs with SimpleTuner on ONE image of that
dataset, then renders captions the model never saw in pretraining three ways: the base model at 50
steps, the base model at 10 steps on its own schedule, and glance's 10 steps. A judge reads each
image's background, colour, shape and place from its pixels; the scores per column and the time
per image are printed and written on the compare sheet. Everything runs on the CPU, offline.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from glance import shapes
from glance.files import write_atomic

DEFAULT_WORKDIR = Path("glance-demo")
DEMO_STEPS = 60  # per phase: the Glance paper's recipe
DEMO_COMPARE = (50, 10)  # base model step counts, each a column before glance's
# The one training image: a caption seen in pretraining, at a fixed seed.
TRAINING_CAPTION = shapes.Caption("yellow", "square", "white", "in the centre")
TRAINING_SEED = 0
DEMO_SEED = 0
# Captions held out of pretraining, judged in the demo (and by the quality tests).
DEMO_PROMPTS = (
    shapes.Caption("red", "triangle", "gray", None),
    shapes.Caption("blue", "circle", "white", None),
    shapes.Caption("green", "square", "gray", "at the top"),
    shapes.Caption("yellow", "circle", "black", "on the right"),
    shapes.Caption("blue", "triangle", "gray", "at the bottom"),
    shapes.Caption("red", "circle", "black", "on the left"),
)
REPORT_NAME = "demo.json"


@dataclass
class ColumnScore:
    """The judge's figures for one column of the sheet."""

    name: str  # "base 50 steps", ..., "glance 10 steps"
    summary: dict  # shapes.summarize: all checks, each check, crispness
    seconds_per_image: float

    def line(self) -> str:
        s = self.summary
        passed = round(s["all"] * s["images"])
        return (
            f"{self.name:<16} judge {passed}/{s['images']} ({s['all']:.0%}), crispness {s['crispness']:.2f}, "
            f"{self.seconds_per_image:.2f} s/image"
        )


@dataclass
class DemoResult:
    workdir: Path
    model: Path
    manifest: Path
    loras: dict[str, Path]
    images: list[Path]  # glance's images
    sheet: Path
    report: Path
    scores: list[ColumnScore]
    seconds: dict[str, float] = field(default_factory=dict)  # per stage


def run_demo(
    workdir: Path = DEFAULT_WORKDIR,
    *,
    steps: int = DEMO_STEPS,
    model: Path | None = None,
    reporter=None,
    emit: Callable[[str], None] = print,
) -> DemoResult:
    """Run (or resume) the demo in `workdir` on the shipped model (or `model`); finished training is reused."""
    from glance.infer import options_from_manifest, run_infer
    from glance.progress import Reporter
    from glance.run_plan import TrainSettings, plan_run
    from glance.smallmodel import RESOLUTION, shipped_model
    from glance.train import train

    assert not shapes.is_held_out(TRAINING_CAPTION) and all(map(shapes.is_held_out, DEMO_PROMPTS))
    reporter = reporter or Reporter()
    workdir = Path(workdir).resolve()
    model = Path(model).resolve() if model is not None else shipped_model()
    seconds: dict[str, float] = {}

    def stage(name: str, work):
        start = time.perf_counter()
        value = work()
        seconds[name] = time.perf_counter() - start
        emit(f"[{name}] {seconds[name]:.1f} s")
        return value

    emit(f"model: {model} (FLUX architecture, {RESOLUTION} px shapes)")
    emit(f"training image: {TRAINING_CAPTION.text!r} (seed {TRAINING_SEED})")
    image = shapes.write_pair(workdir / "data", TRAINING_CAPTION, TRAINING_SEED)
    settings = TrainSettings(
        image=image,
        model=str(model),
        resolution=RESOLUTION,
        steps=steps,
        output_dir=workdir / "output",
        config_dir=workdir / "config",
        device="cpu",
    )
    plan = stage("check + plan", lambda: plan_run(settings))
    stage("train (SimpleTuner, 2 phases)", lambda: train(plan, reporter=reporter))

    # The demo's own images in its own folder: replacing them on a re-run is what the user asked for.
    options = options_from_manifest(
        plan.output_dir,
        prompts=[caption.text for caption in DEMO_PROMPTS],
        seeds=[DEMO_SEED],
        compare=list(DEMO_COMPARE),
        out=plan.output_dir / "samples" / "glance.png",
        device="cpu",
        force=True,
    )
    judged: dict = {}  # the judge reads the images once they are all written, before the run writes its sheet

    def judge_columns(images: list) -> dict[int, str]:
        judged["scores"], judged["verdicts"] = judge_run(images)
        return {column: f"judge {score.summary['all']:.0%} · crisp {score.summary['crispness']:.2f}"
                for column, score in enumerate(judged["scores"])}  # fmt: skip

    run = stage("infer (diffusers, 1 pipeline)", lambda: run_infer(options, reporter, column_notes=judge_columns))
    scores, verdicts = judged["scores"], judged["verdicts"]
    report = plan.output_dir / "samples" / REPORT_NAME
    write_atomic(report, json.dumps({
        "model": str(model),
        "training_caption": TRAINING_CAPTION.text,
        "columns": [asdict(score) for score in scores],
        "images": verdicts,
    }, indent=2) + "\n")  # fmt: skip
    return DemoResult(
        workdir=workdir,
        model=model,
        manifest=plan.manifest_path,
        loras={phase: plan.lora_dir(phase) for phase in ("slow", "fast")},
        images=[result.image for result in run.images],
        sheet=run.sheet,
        report=report,
        scores=scores,
        seconds=seconds,
    )


def judge_run(images: list) -> tuple[list[ColumnScore], list[dict]]:
    """Judge every image of an infer run (ImageResults with their --compare bases): per column and per image."""
    from PIL import Image

    columns: list[list] = [[] for _ in range(len(images[0].bases) + 1)]
    per_image = []
    for result in images:
        caption = shapes.Caption.parse(result.prompt)
        for column, shown in enumerate([*result.bases, result]):
            with Image.open(shown.image) as picture:
                verdict = shapes.judge(picture, caption)
            columns[column].append((verdict, shown.seconds))
            per_image.append({"image": str(shown.image), "prompt": result.prompt, "seed": result.seed,
                              "passed": verdict.passed, "checks": verdict.checks, "seen": verdict.seen,
                              "crispness": round(verdict.crispness, 4)})  # fmt: skip
    names = [f"base {len(base.summary['steps'])} steps" for base in images[0].bases]
    names.append(f"glance {len(images[0].summary['steps'])} steps")
    scores = [
        ColumnScore(
            name=name,
            summary=shapes.summarize([verdict for verdict, _ in column]),
            seconds_per_image=round(sum(seconds for _, seconds in column) / len(column), 3),
        )
        for name, column in zip(names, columns, strict=True)
    ]
    return scores, per_image
