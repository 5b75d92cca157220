"""`glance demo`: the whole path on the small model glance ships, on CPU, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from glance.cli._common import cli_errors, examples
from glance.demo import DEFAULT_WORKDIR, DEMO_STEPS

EPILOG = examples("glance demo", "glance demo --workdir /tmp/glance-demo --steps 30")


@cli_errors
def demo_command(
    workdir: Annotated[Path, typer.Option(help="Where the pair, the run and the images go.")] = DEFAULT_WORKDIR,
    steps: Annotated[int, typer.Option(min=1, help="Training steps per phase.")] = DEMO_STEPS,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Stream SimpleTuner's output and diffusers' own bars.")
    ] = False,
) -> None:
    """Train both Glance LoRAs on one image with SimpleTuner (CPU), on the small shapes model glance ships, then
    judge captions it never saw: base model at 50 and 10 steps against glance's 10 steps, side by side.

    Every stage is the real one; a second run reuses the trained pair.
    """
    import sys

    from glance.demo import run_demo
    from glance.progress import Reporter
    from glance.train import TrainingInterrupted

    try:
        result = run_demo(workdir, steps=steps, reporter=Reporter(verbose=verbose))
    except TrainingInterrupted as exc:
        print(f"glance: {exc}", file=sys.stderr)
        raise typer.Exit(130) from None
    print(f"judged {result.scores[0].summary['images']} captions held out of pretraining (background, colour, "
          "shape, place):")  # fmt: skip
    for score in result.scores:
        print(f"  {score.line()}")
    print(f"slow LoRA: {result.loras['slow']}")
    print(f"fast LoRA: {result.loras['fast']}")
    print(f"manifest: {result.manifest}")
    print(f"sheet:    {result.sheet}")
    print(f"report:   {result.report}")
    print(f"total:    {sum(result.seconds.values()):.1f} s")
