"""`glance eval`: is the pair worth using? base-50, base-10, schedule-10 and glance-10, scored, with a verdict."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from glance.cli._common import ForceOpt, SampleDevice, cli_errors, examples

EPILOG = examples(
    "glance eval -o output",
    "glance eval -o output --scorer judge --seeds 0-2",
    "glance eval -o runs/lighthouse -o runs/lighthouse-lr1e-3 --prompts prompts.txt --seeds 0-3",
    "glance eval -o output --scorer clip --scorer dino --scorer-model clip=./clip-vit-large --device cuda",
    "glance eval -o output --reference 30 --num-processes 4 --device cuda --json",
)


class Scorer(StrEnum):
    judge = "judge"
    clip = "clip"
    dino = "dino"


@cli_errors
def eval_command(
    runs: Annotated[
        list[Path],
        typer.Option(
            "--output-dir", "-o", metavar="RUN", help="A finished run folder; give -o several times to compare pairs."
        ),
    ] = [Path("output")],  # noqa: B006 - typer reads the default from here
    prompts_file: Annotated[
        Path | None,
        typer.Option(
            "--prompts",
            help="A UTF-8 file, one prompt per line. [default: glance's 48 prompts; on the shapes model its "
            "held-out and open captions]",
        ),
    ] = None,
    seeds: Annotated[str, typer.Option("--seeds", help="Seeds per prompt: 3, 0,5,9 or 0-7.")] = "0-1",
    reference: Annotated[
        int, typer.Option("--reference", min=1, help="Steps of the reference column (the base model).")
    ] = 50,
    scorers: Annotated[
        list[Scorer] | None,
        typer.Option(
            "--scorer",
            metavar="judge|clip|dino",
            help="judge (the shapes model's judge), clip, dino; several allowed. SSIM is always scored. "
            "[default: judge on the shapes model, else clip and dino]",
        ),
    ] = None,
    scorer_models: Annotated[
        list[str] | None,
        typer.Option(
            "--scorer-model",
            metavar="[SCORER=]PATH",
            help="A local folder (or Hub id) for a scorer's model: clip=./folder; a bare PATH is the one model "
            "scorer chosen. [default: openai/clip-vit-base-patch32, facebook/dinov2-small]",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder for the images and reports. [default: RUN/eval]")
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option(
            "--cache", help="Render cache of base images. [default: $GLANCE_EVAL_CACHE or ~/.cache/glance/eval]"
        ),
    ] = None,
    device: Annotated[SampleDevice, typer.Option(help="auto: cuda, else mps, else cpu.")] = SampleDevice.auto,
    num_processes: Annotated[
        int, typer.Option("--num-processes", min=1, help="Spread the renders over N processes, one device each.")
    ] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print eval.json's content instead of the table.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the table.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also show the libraries' own output.")] = False,
    force: ForceOpt = False,
) -> None:
    """Measure whether the pair of each run is worth using, on prompts x seeds, with 95 % intervals.

    Columns: base-50 (the reference), base-10 (the base model's own 10 steps), schedule-10 (the base on
    the pair's trained sigmas, no LoRA) and glance-10 (the pair as `glance infer` samples it; one per
    run). Each image is scored for closeness to the reference (SSIM; DINOv2 / CLIP image similarity),
    prompt adherence (CLIP score; the judge) and the pull toward the pair's training image. One verdict
    line rests on closeness to the reference. Base renders are cached: a second pair renders only its own.
    """
    import sys

    from glance.batch import parse_seeds, read_prompts_file
    from glance.eval import run_eval
    from glance.eval_plan import EvalOptions
    from glance.families import GlanceError
    from glance.progress import Reporter

    chosen = [s.value for s in scorers] if scorers else None
    models: dict[str, str] = {}
    for spec in scorer_models or []:
        name, sep, path = spec.partition("=")
        if not sep:
            model_scorers = [s for s in (chosen or []) if s != "judge"]
            if len(model_scorers) != 1:
                raise GlanceError(f"--scorer-model {spec}: say which scorer it is for, e.g. clip={spec}")
            name, path = model_scorers[0], spec
        if name not in ("clip", "dino"):
            raise GlanceError(f"--scorer-model {spec}: {name!r} takes no model (clip and dino do)")
        models[name] = path
    options = EvalOptions(
        runs=runs,
        prompts=read_prompts_file(prompts_file) if prompts_file is not None else None,
        seeds=parse_seeds(seeds),
        reference=reference,
        scorers=chosen,
        scorer_models=models,
        out=out,
        cache=cache,
        device=device.value,
        num_processes=num_processes,
        force=force,
    )
    reporter = Reporter(verbose=verbose, quiet=quiet or as_json, out=sys.stderr if as_json else None)
    result = run_eval(options, reporter)
    if as_json:
        print(json.dumps(result.report, indent=2))
        return
    print(result.table)
    print(f"wrote {result.out / 'eval.json'}, eval.md and {result.report['sheet']} in {result.out}")
