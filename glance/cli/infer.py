"""`glance infer`: sample the slow and fast LoRAs of a run in one diffusers pipeline call."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from glance.cli._common import FamilyOpt, ForceOpt, ModelOpt, OutputDirOpt, cli_errors, examples

EPILOG = examples(
    'glance infer "a red circle and a blue square on a warm gradient"',
    'glance infer "a lighthouse at sunset" --seed 7 --out lighthouse.png --base-steps 50',
    'glance infer "a lighthouse" --slow ./glance-slow --fast ./glance-fast --model black-forest-labs/FLUX.1-dev '
    "--slow-timesteps 1000,986.9786,973.2042,958.6094,943.1188 "
    "--fast-timesteps 926.6473,825.7017,677.9868,441.1997,60.5503",
    'glance infer "a red circle" -o output --device cpu --json',
    'glance infer --lora-repo you/lighthouse-glance "a lighthouse at dawn"',
)


SlowListOpt = Annotated[
    str | None,
    typer.Option(
        "--slow-timesteps", help="The slow LoRA's training list, comma-separated. [default: from the manifest]"
    ),
]
FastListOpt = Annotated[
    str | None,
    typer.Option(
        "--fast-timesteps", help="The fast LoRA's training list, comma-separated. [default: from the manifest]"
    ),
]


class InferDevice(StrEnum):
    auto = "auto"
    cuda = "cuda"
    mps = "mps"
    cpu = "cpu"


class InferDtype(StrEnum):
    auto = "auto"
    bfloat16 = "bfloat16"
    float16 = "float16"
    float32 = "float32"


@cli_errors
def infer_command(
    prompt: Annotated[str, typer.Argument(help="What to draw; usually close to the training caption.")],
    output_dir: OutputDirOpt = Path("output"),
    lora_repo: Annotated[
        str | None,
        typer.Option(
            "--lora-repo", help="Sample a pair pushed with `glance push` (Hub repo id) instead of OUTPUT_DIR."
        ),
    ] = None,
    lora_revision: Annotated[
        str | None, typer.Option("--lora-revision", help="Branch, tag or commit of --lora-repo.")
    ] = None,
    model: ModelOpt = None,
    family: FamilyOpt = None,
    slow: Annotated[Path | None, typer.Option(help="Slow LoRA folder. [default: from OUTPUT_DIR/glance.json]")] = None,
    fast: Annotated[Path | None, typer.Option(help="Fast LoRA folder. [default: from OUTPUT_DIR/glance.json]")] = None,
    slow_timesteps: SlowListOpt = None,
    fast_timesteps: FastListOpt = None,
    out: Annotated[Path, typer.Option("--out", help="The PNG to write; it carries its parameters.")] = Path(
        "glance.png"
    ),
    seed: Annotated[int, typer.Option(help="Seed of the starting noise (drawn on the CPU, same on every device).")] = 0,
    width: Annotated[int | None, typer.Option(min=16, help="[default: the training resolution]")] = None,
    height: Annotated[int | None, typer.Option(min=16, help="[default: the training resolution]")] = None,
    guidance: Annotated[
        float | None,
        typer.Option(help="FLUX: guidance embedding; SD3: CFG scale. [default: the training guidance / family's]"),
    ] = None,
    negative_prompt: Annotated[str | None, typer.Option(help="[default: per family; Qwen-Image ' ']")] = None,
    true_cfg: Annotated[float | None, typer.Option(help="True CFG scale. [default: per family; Qwen-Image 5]")] = None,
    device: Annotated[InferDevice, typer.Option(help="auto: cuda, else mps, else cpu.")] = InferDevice.auto,
    dtype: Annotated[InferDtype, typer.Option(help="auto: bfloat16 on a GPU, float32 on the CPU.")] = InferDtype.auto,
    cpu_offload: Annotated[
        bool, typer.Option("--cpu-offload", help="Keep each model on the CPU until it runs (less GPU memory).")
    ] = False,
    base_steps: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Also render the base model without LoRAs at its own N-step schedule (same prompt, seed and "
            "guidance) to OUT-baseN.png.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run's record as JSON.")] = False,
    force: ForceOpt = False,
) -> None:
    """Render PROMPT with the slow LoRA on the first (high-noise) steps and the fast LoRA on the rest.

    One pipeline call runs exactly the sigmas the LoRAs were trained on (no schedule shift) and
    switches adapters after the last slow step. Model, lists, LoRA folders and resolution come from
    OUTPUT_DIR/glance.json; flags override them.
    """
    from glance.infer import options_from_manifest, run_infer
    from glance.schedule import parse_lists

    lists = parse_lists(slow_timesteps, fast_timesteps)
    if lora_repo is not None:  # its manifest and LoRAs, downloaded (cached), read like a run folder
        from glance.share import fetch_pair

        output_dir = fetch_pair(lora_repo, lora_revision)
    options = options_from_manifest(
        output_dir,
        prompt=prompt,
        model=model,
        family=family.value if family is not None else None,
        slow_lora=slow,
        fast_lora=fast,
        lists=lists,
        out=out,
        seed=seed,
        width=width,
        height=height,
        guidance=guidance,
        negative_prompt=negative_prompt,
        true_cfg=true_cfg,
        device=device.value,
        dtype=dtype.value,
        cpu_offload=cpu_offload,
        base_steps=base_steps,
        force=force,
    )
    result = run_infer(options)

    if as_json:
        record = {"image": str(result.image), "seconds": round(result.seconds, 3), **result.summary}
        if result.base is not None:
            record["base"] = {
                "image": str(result.base.image),
                "seconds": round(result.base.seconds, 3),
                **result.base.summary,
            }
        print(json.dumps(record, indent=2))
        return
    print("step  sigma   -> next     adapter")
    for record in result.trace:
        print(f"{record.step:>4}  {record.sigma:.4f} -> {record.sigma_next:.4f}   {', '.join(record.adapters)}")
    print(f"wrote {result.image} ({len(result.trace)} steps, {result.seconds:.1f} s)")
    if result.base is not None:
        print(f"wrote {result.base.image} (base model, {len(result.base.trace)} steps, {result.base.seconds:.1f} s)")
