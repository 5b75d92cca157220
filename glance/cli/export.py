"""`glance export comfyui`: a finished run as ComfyUI LoRA files and a workflow on the trained sigmas."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from glance.cli._common import ForceOpt, OutputDirOpt, cli_errors, examples

EPILOG = examples(
    "glance export comfyui",
    'glance export comfyui -o runs/lighthouse --prompt "a lighthouse at dawn" --seed 7',
    "glance export comfyui --out ~/ComfyUI/user/glance --model-file flux1-dev-fp8.safetensors",
    "glance export comfyui --text-encoder clip_l.safetensors --text-encoder t5xxl_fp8_e4m3fn.safetensors --json",
)

export_app = typer.Typer(
    name="export",
    help="Write a finished run in another tool's format (ComfyUI).",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@export_app.command("comfyui", epilog=EPILOG)
@cli_errors
def comfyui_command(
    output_dir: OutputDirOpt = Path("output"),
    out: Annotated[
        Path | None, typer.Option("--out", help="The folder the files go to. [default: OUTPUT_DIR/comfyui]")
    ] = None,
    prompt: Annotated[
        str | None, typer.Option(help="The workflow's prompt. [default: the caption the run trained on]")
    ] = None,
    seed: Annotated[int, typer.Option(min=0, help="The workflow's seed (its RandomNoise node).")] = 0,
    model_file: Annotated[
        str | None,
        typer.Option(
            help="The base model's file name in ComfyUI's models folder. [default: per family, e.g. "
            "flux1-dev.safetensors]"
        ),
    ] = None,
    text_encoder: Annotated[
        list[str] | None,
        typer.Option(
            "--text-encoder",
            help="A text encoder's file name, once per file in the loader's order "
            "[default: per family, e.g. clip_l.safetensors, t5xxl_fp16.safetensors].",
        ),
    ] = None,
    vae: Annotated[
        str | None, typer.Option("--vae", help="The VAE's file name. [default: per family, e.g. ae.safetensors]")
    ] = None,
    force: ForceOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object describing the export.")] = False,
) -> None:
    """Write both LoRAs with their trained strength, a ComfyUI workflow and a README into --out.

    The LoRA files keep glance's tensors under keys ComfyUI maps for the family, plus one `.alpha` tensor
    per layer: ComfyUI reads a LoRA's strength from those and runs a file without them at rank / alpha of
    its trained strength. The workflow (API format: drag it onto ComfyUI, or POST it to /prompt) loads the
    base model, applies the slow LoRA to one branch and the fast LoRA to another, and samples
    ManualSigmas(slow + fast + 0) split at the switch: the high sigmas with the slow branch and the seed's
    noise, the low ones with the fast branch, continuing the same latent.
    """
    from glance.export import ExportOptions, export_comfyui

    result = export_comfyui(
        ExportOptions(
            output_dir=output_dir,
            out=out,
            prompt=prompt,
            seed=seed,
            model_file=model_file,
            text_encoders=tuple(text_encoder) if text_encoder else None,
            vae_file=vae,
            force=force,
        )
    )
    if as_json:
        print(json.dumps(result.summary(), indent=2, ensure_ascii=False))
        return
    for name in result.files:
        path = result.folder / name
        print(f"{'wrote' if path in result.written else 'up to date'} {path}")
    lora = result.loras["slow"]
    print(
        f"{result.family}: LoRAs at alpha {lora.alpha:g} / rank {lora.rank} (from {lora.alpha_from}); "
        f"workflow seed {result.seed}: {result.prompt}"
    )
    print(f"see {result.folder / 'README.md'} for where each file goes in ComfyUI")
