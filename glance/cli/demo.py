"""`glance demo`: the whole path on a tiny model, on CPU, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from glance.cli._common import cli_errors, examples
from glance.demo import DEFAULT_WORKDIR, DEMO_STEPS

EPILOG = examples("glance demo", "glance demo --workdir /tmp/glance-demo --steps 4")


@cli_errors
def demo_command(
    workdir: Annotated[Path, typer.Option(help="Where the tiny model, the run and the image go.")] = DEFAULT_WORKDIR,
    steps: Annotated[int, typer.Option(min=1, help="Training steps per phase.")] = DEMO_STEPS,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Stream SimpleTuner's output and diffusers' own bars.")
    ] = False,
) -> None:
    """Build a tiny random Flux offline, train both Glance LoRAs on a sample image with SimpleTuner (CPU), sample them.

    Every stage is the real one; a second run reuses what exists.
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
    print(f"model:    {result.model}")
    print(f"slow LoRA: {result.loras['slow']}")
    print(f"fast LoRA: {result.loras['fast']}")
    print(f"manifest: {result.manifest}")
    print(f"image:    {result.image}")
    print(f"total:    {sum(result.seconds.values()):.1f} s")
