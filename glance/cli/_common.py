"""Shared pieces of the commands: option types, error handling, help epilogs."""

from __future__ import annotations

import functools
import sys
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from glance.families import FAMILIES, GlanceError


def examples(*lines: str) -> str:
    """An 'Examples' epilog in the style of huggingface_hub's CLI."""
    body = "\n\n".join(f"  $ {line}" for line in lines)
    return f"Examples\n\n{body}"


def option_error(exc: ValidationError) -> str:
    """The first refusal of a settings model, named by its option (learning_rate -> --learning-rate)."""
    first = exc.errors()[0]
    loc = first["loc"]
    where = f"--{loc[0].replace('_', '-')}" if len(loc) == 1 and isinstance(loc[0], str) else ".".join(map(str, loc))
    return f"{where}: {first['msg']}"


def cli_errors(command):
    """Turn a GlanceError into one line on stderr and exit code 1: no traceback for bad input."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except GlanceError as exc:
            print(f"glance: error: {exc}", file=sys.stderr)
            raise typer.Exit(1) from None
        except ValidationError as exc:  # a settings model refused a value the options let through
            print(f"glance: error: {option_error(exc)}", file=sys.stderr)
            raise typer.Exit(1) from None

    return wrapper


FamilyName = Enum("FamilyName", {name: name for name in FAMILIES}, type=str)


class TrainDevice(StrEnum):  # where SimpleTuner trains (infer has its own, with mps)
    auto = "auto"
    cuda = "cuda"
    cpu = "cpu"


class SampleDevice(StrEnum):  # where infer and eval sample: diffusers also runs on mps
    auto = "auto"
    cuda = "cuda"
    mps = "mps"
    cpu = "cpu"


ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Hub id or local diffusers folder. [default: black-forest-labs/FLUX.1-dev]"),
]
RevisionOpt = Annotated[
    str | None,
    typer.Option(help="Hub model revision: branch, tag or commit hash. [default: main]"),
]
FamilyOpt = Annotated[
    FamilyName | None,
    typer.Option(help="Model family; read from a local model's model_index.json or known hub ids when left out."),
]
ResolutionOpt = Annotated[int, typer.Option(min=64, help="Training resolution in pixels (square area).")]
OutputDirOpt = Annotated[
    Path,
    typer.Option(
        "--output-dir", "-o", help="Run folder: LoRAs in OUTPUT_DIR/glance-slow and /glance-fast, manifest glance.json."
    ),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite existing outputs that differ.")]
SlowTimestepsOpt = Annotated[
    str | None,
    typer.Option(
        help="Slow-phase list, comma-separated: timesteps (0-1000) or sigmas (0-1). [default: from the model]"
    ),
]
FastTimestepsOpt = Annotated[
    str | None,
    typer.Option(help="Fast-phase list, on the same scale as --slow-timesteps. [default: from the model]"),
]


class Quantize(StrEnum):  # the memory plan's quantization (glance/memory/)
    auto = "auto"
    none = "none"
    int8 = "int8"
    int4 = "int4"
    fp8 = "fp8"


QuantizeOpt = Annotated[
    Quantize,
    typer.Option(
        help="Quantize the base model (quanto): auto picks the lightest plan that fits the GPU "
        "(none on the CPU); the LoRA itself stays bf16."
    ),
]
GradientCheckpointingOpt = Annotated[
    bool | None,
    typer.Option(
        "--gradient-checkpointing/--no-gradient-checkpointing",
        help="Recompute activations in the backward pass: less memory, slower steps. [default: as the plan says]",
        show_default=False,
    ),
]
GpuMemoryOpt = Annotated[
    float | None,
    typer.Option(
        "--gpu-memory",
        min=1,
        metavar="GB",
        help="Plan for a card with this much memory instead of the one nvidia-smi reports.",
    ),
]
