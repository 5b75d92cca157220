"""`glance train`: both SimpleTuner phases on one image, resumable and safe."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from glance.cli._common import (
    FamilyOpt,
    FastTimestepsOpt,
    GpuMemoryOpt,
    GradientCheckpointingOpt,
    ModelOpt,
    OutputDirOpt,
    Quantize,
    QuantizeOpt,
    ResolutionOpt,
    RevisionOpt,
    SlowTimestepsOpt,
    TrainDevice,
    cli_errors,
    examples,
)
from glance.cli.configs import (
    BackgroundOpt,
    ConfigDirOpt,
    DeviceOpt,
    ImageArg,
    LearningRateOpt,
    RankOpt,
    SeedOpt,
    StepsOpt,
    settings_from_options,
)


class Phase(StrEnum):
    slow = "slow"
    fast = "fast"


class Phases(StrEnum):  # glance/phase_mode.py
    auto = "auto"
    parallel = "parallel"
    sequential = "sequential"


EPILOG = examples(
    "glance train data/glance.png",
    "glance train data/glance.png --model ./tiny-flux --device cpu --steps 4",
    "glance train data/glance.png --only fast --force",
    "glance train data/glance.png --phases sequential      # one phase after the other, whatever fits",
    "glance train data/glance.png --dry-run --phases parallel --num-processes 2 --device cuda",
    "glance train data/glance.png --quantize int8 --gradient-checkpointing",
)


@cli_errors
def train_command(
    image: ImageArg = Path("data/glance.png"),
    model: ModelOpt = None,
    revision: RevisionOpt = None,
    family: FamilyOpt = None,
    resolution: ResolutionOpt = 1024,
    steps: StepsOpt = None,
    rank: RankOpt = None,
    learning_rate: LearningRateOpt = None,
    slow_timesteps: SlowTimestepsOpt = None,
    fast_timesteps: FastTimestepsOpt = None,
    output_dir: OutputDirOpt = Path("output"),
    config_dir: ConfigDirOpt = Path("config"),
    device: DeviceOpt = TrainDevice.auto,
    seed: SeedOpt = 0,
    quantize: QuantizeOpt = Quantize.auto,
    gradient_checkpointing: GradientCheckpointingOpt = None,
    gpu_memory: GpuMemoryOpt = None,
    background: BackgroundOpt = "white",
    only: Annotated[Phase | None, typer.Option(help="Run one phase only.")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Retrain phases that are up to date; overwrite configs.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the files, commands and environment; run nothing.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Stream SimpleTuner's output as it comes.")] = False,
    phases: Annotated[
        Phases,
        typer.Option(
            help="Both phases at once (parallel: on their own GPUs, or sharing one when twice the memory plan "
            "fits it, or on the CPU) or one after the other; auto: at once where that fits and is faster."
        ),
    ] = Phases.auto,
    num_processes: Annotated[
        int, typer.Option("--num-processes", min=1, help="GPUs (accelerate processes) per phase.")
    ] = 1,
) -> None:
    """Check the pair, write the configs, train the slow and the fast LoRA, record the run in OUTPUT_DIR/glance.json.

    The phases run at once where that fits and is faster (--phases; the plan line says which and
    why). A phase whose weights exist and whose inputs are unchanged is skipped; Ctrl-C stops
    training (exit 130) and leaves the phases it stopped not done.
    """
    from glance.phase import describe_launches, phase_launches
    from glance.run_plan import plan_run
    from glance.train import TrainingInterrupted, train

    settings = settings_from_options(
        image,
        model=model,
        revision=revision,
        family=family,
        resolution=resolution,
        steps=steps,
        rank=rank,
        learning_rate=learning_rate,
        slow_timesteps=slow_timesteps,
        fast_timesteps=fast_timesteps,
        output_dir=output_dir,
        config_dir=config_dir,
        device=device,
        seed=seed,
        phases=phases.value,
        num_processes=num_processes,
        quantize=quantize,
        gradient_checkpointing=gradient_checkpointing,
        gpu_memory=gpu_memory,
        background=background,
    )
    plan = plan_run(settings, fetch=not dry_run)
    for note in plan.notes:
        print(f"note: {note}", file=sys.stderr)
    if dry_run:
        describe_launches(plan, phase_launches(plan))
        return
    from glance.progress import Reporter

    try:
        manifest = train(
            plan,
            force=force,
            only=only.value if only is not None else None,
            reporter=Reporter(verbose=verbose),
        )
    except TrainingInterrupted as exc:
        print(f"glance: {exc}", file=sys.stderr)
        raise typer.Exit(130) from None
    done = ", ".join(manifest.phases) or "none"
    print(f"manifest: {plan.manifest_path} (phases done: {done})")
    if manifest.complete:
        print(
            'next: glance infer "your prompt"' + (f" --output-dir {output_dir}" if output_dir != Path("output") else "")
        )
