"""`glance configs` and `glance schedule`: the SimpleTuner files, and the timestep lists behind them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from glance.cli._common import (
    FamilyOpt,
    FastTimestepsOpt,
    ForceOpt,
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
from glance.families import DEFAULT_MODEL

ImageArg = Annotated[
    Path,
    typer.Argument(help="The training image; its caption is the .txt file with the same stem."),
]
ConfigDirOpt = Annotated[Path, typer.Option("--config-dir", help="Where the four SimpleTuner JSON files go.")]
StepsOpt = Annotated[int | None, typer.Option(min=1, help="Training steps per phase. [default: 60, the paper's]")]
RankOpt = Annotated[int | None, typer.Option(min=1, help="LoRA rank (alpha = 4 x rank). [default: per family]")]
LearningRateOpt = Annotated[float | None, typer.Option(min=0, help="Constant learning rate. [default: per family]")]
DeviceOpt = Annotated[
    TrainDevice, typer.Option(help="Where SimpleTuner trains; cpu gets mixed_precision 'no' and fp32 AdamW.")
]
SeedOpt = Annotated[int, typer.Option(help="Training seed.")]
BackgroundOpt = Annotated[
    str,
    typer.Option(
        help="What a transparent image's clear pixels are trained on: a colour name or #rrggbb "
        "(SimpleTuner would drop the alpha channel and train on the colour hidden under it)."
    ),
]


def settings_from_options(
    image: Path,
    *,
    model: str | None,
    family,
    revision: str | None = None,
    resolution: int,
    steps: int | None,
    rank: int | None,
    learning_rate: float | None,
    slow_timesteps: str | None,
    fast_timesteps: str | None,
    output_dir: Path,
    config_dir: Path,
    device: TrainDevice,
    seed: int,
    phases: str = "auto",
    num_processes: int = 1,
    quantize: Quantize = Quantize.auto,
    gradient_checkpointing: bool | None = None,
    gpu_memory: float | None = None,
    background: str = "white",
):
    from glance.run_plan import TrainSettings

    return TrainSettings(
        image=image,
        model=model or DEFAULT_MODEL,
        revision=revision,
        family=family.value if family is not None else None,
        resolution=resolution,
        steps=steps,
        rank=rank,
        learning_rate=learning_rate,
        slow_timesteps=slow_timesteps,
        fast_timesteps=fast_timesteps,
        output_dir=output_dir,
        config_dir=config_dir,
        device=device.value,
        seed=seed,
        phases=phases,
        num_processes=num_processes,
        quantize=quantize.value,
        gradient_checkpointing=gradient_checkpointing,
        gpu_memory=gpu_memory,
        background=background,
    )


EPILOG = examples(
    "glance configs --out config/",
    "glance configs data/glance.png --model ./my-flux --device cpu --steps 8",
    "glance configs --model Qwen/Qwen-Image --slow-timesteps 1000,979.19 --fast-timesteps 886.71,20 --force",
    "glance configs --device cuda --gpu-memory 24      # the plan for a 24 GB card: int8 + gradient checkpointing",
)


@cli_errors
def configs_command(
    image: ImageArg = Path("data/glance.png"),
    out: Annotated[Path, typer.Option("--out", help="Where the four SimpleTuner JSON files go.")] = Path("config"),
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
    device: DeviceOpt = TrainDevice.auto,
    seed: SeedOpt = 0,
    quantize: QuantizeOpt = Quantize.auto,
    gradient_checkpointing: GradientCheckpointingOpt = None,
    gpu_memory: GpuMemoryOpt = None,
    background: BackgroundOpt = "white",
    check: Annotated[bool, typer.Option("--check", help="Also run SimpleTuner's own parser over both files.")] = False,
    force: ForceOpt = False,
) -> None:
    """Write the SimpleTuner files for both phases: multidatabackend-PHASE.json and glance-PHASE.json.

    Also stages the image and caption into OUTPUT_DIR/dataset (SimpleTuner writes files into its
    dataset folder) and makes each phase's working folder, so the files run as written with the
    commands printed at the end. As with `glance train`, files glance wrote itself are replaced
    when an option changes and a file edited since needs --force; a folder holding a finished run on
    other inputs is refused without --force.
    """
    from glance.files import check_writable_dir
    from glance.lock import RunLock
    from glance.run_plan import plan_run, simpletuner_command_lines
    from glance.run_record import write_run_files

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
        config_dir=out,
        device=device,
        seed=seed,
        quantize=quantize,
        gradient_checkpointing=gradient_checkpointing,
        gpu_memory=gpu_memory,
        background=background,
    )
    plan = plan_run(settings, fetch=check)
    print(plan.memory.describe())
    for note in plan.notes:
        print(f"note: {note}", file=sys.stderr)
    if check:
        from glance.simpletuner import parser_check

        for phase, config in plan.configs.items():
            parser_check(config)
            print(f"SimpleTuner's parser accepts the {phase} config")
    if plan.source.folder is None:
        print(f"model: {plan.source.note}")
    check_writable_dir(plan.output_dir)
    with RunLock(plan.output_dir):  # never restage the dataset under a running `glance train`
        write_run_files(plan, force=force, keep_finished=True)
    for path in plan.files():
        print(f"wrote {path}")
    print(f"staged {plan.pair.image} -> {plan.dataset_dir}")
    print("run each phase (from this folder) with:")
    for line in simpletuner_command_lines(plan):
        print(f"  {line}")


SCHEDULE_EPILOG = examples(
    "glance schedule",
    "glance schedule --family qwen_image --resolution 1024",
    "glance schedule --model ./my-flux --resolution 512",
)


@cli_errors
def schedule_command(
    model: ModelOpt = None,
    family: FamilyOpt = None,
    resolution: ResolutionOpt = 1024,
) -> None:
    """Print the default slow and fast lists and the step where the fast LoRA takes over.

    They are the model's own 50-step schedule at RESOLUTION, steps 0,2,4,6,8 (slow) and
    10,20,30,40,49 (fast), as the Glance authors chose them.
    """
    from glance.families import FAMILIES, model_schedule, resolve_family
    from glance.schedule import FAST_INDICES, SLOW_INDICES, default_lists, switch_step, to_simpletuner

    if model is None and family is not None:
        model = FAMILIES[family.value].hub_ids[0]
    model = model or DEFAULT_MODEL
    fam = resolve_family(model, family.value if family is not None else None)
    lists = default_lists(fam, model_schedule(model, fam), resolution)
    print(f"{model} ({fam.name}) at {resolution}x{resolution}")
    rows = [
        ("slow", SLOW_INDICES, lists.slow, lists.slow_sigmas),
        ("fast", FAST_INDICES, lists.fast, lists.fast_sigmas),
    ]
    # Steps are counted from 1, as the model card counts them; ComfyUI's SplitSigmas takes the 0-based index.
    step = 0
    for phase, indices, timesteps, sigmas in rows:
        for index, t, s in zip(indices, timesteps, sigmas, strict=True):
            step += 1
            print(f"  step {step:2d}  {phase}  timestep {t:9.4f}  sigma {s:.6f}  (base step {index + 1} of 50)")
    switch = switch_step(lists)
    print(
        f"the fast LoRA takes over from step {switch + 1} of {step} (ComfyUI SplitSigmas step {switch}); "
        f"sigma 0 follows step {step}"
    )
    print(f"--slow-timesteps {to_simpletuner(lists.slow)}")
    print(f"--fast-timesteps {to_simpletuner(lists.fast)}")
