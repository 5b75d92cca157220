"""`glance infer`: sample the slow and fast LoRAs of a run in one diffusers pipeline call."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from glance.cli._common import (
    FamilyOpt,
    ForceOpt,
    GpuMemoryOpt,
    OutputDirOpt,
    Quantize,
    QuantizeOpt,
    SampleDevice,
    cli_errors,
    examples,
)

EPILOG = examples(
    'glance infer "a red circle and a blue square on a warm gradient"',
    'glance infer "a lighthouse at sunset" "a lighthouse in fog" --seeds 0-3 --compare 50',
    'glance infer "a lighthouse at sunset" --compare 50,10',
    "glance infer --prompts prompts.txt --seeds 0,5,9 --out renders/glance.png --json",
    "glance infer --prompts prompts.txt --seeds 0-7 --num-processes 4 --device cuda",
    'glance infer "a lighthouse" --slow ./glance-slow --fast ./glance-fast --model black-forest-labs/FLUX.1-dev '
    "--slow-timesteps 1000,986.9786,973.2042,958.6094,943.1188 "
    "--fast-timesteps 926.6473,825.7017,677.9868,441.1997,60.5503",
    'glance infer "a red circle" -o output --device cpu --json',
    'glance infer "a lighthouse" --quantize int8 --cpu-offload',
    'glance infer --lora-repo you/lighthouse-glance "a lighthouse at dawn"',
)


ModelOpt = Annotated[  # the run's model by default, not the family default `glance train` uses
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Base model: hub id or local diffusers folder. [default: the run's, from OUTPUT_DIR/glance.json]",
    ),
]
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


class InferDtype(StrEnum):
    auto = "auto"
    bfloat16 = "bfloat16"
    float16 = "float16"
    float32 = "float32"


@cli_errors
def infer_command(
    prompts: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="PROMPT",
            help="What to draw, one or more prompts; usually close to the training caption.",
            show_default=False,
        ),
    ] = None,
    prompts_file: Annotated[
        Path | None,
        typer.Option("--prompts", help="A UTF-8 file, one prompt per line; blank lines and # comments are skipped."),
    ] = None,
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
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="The PNG to write, or a folder (glance.png inside it); with several images they are numbered "
            "beside it (glance-001.png, ...). Each PNG carries its parameters. [default: OUTPUT_DIR/samples/"
            "glance.png, where `glance push` looks; with --lora-repo or without a run, ./glance.png]",
            show_default=False,
        ),
    ] = None,
    seeds: Annotated[
        str,
        typer.Option(
            "--seeds",
            "--seed",
            help="Seeds of the starting noise: 3, a list 0,5,9 or a range 0-7 (drawn on the CPU: same on any device).",
        ),
    ] = "0",
    width: Annotated[int | None, typer.Option(min=16, help="[default: the training resolution]")] = None,
    height: Annotated[int | None, typer.Option(min=16, help="[default: the training resolution]")] = None,
    guidance: Annotated[
        float | None,
        typer.Option(help="FLUX: guidance embedding; SD3: CFG scale. [default: the training guidance / family's]"),
    ] = None,
    negative_prompt: Annotated[str | None, typer.Option(help="[default: per family; Qwen-Image ' ']")] = None,
    true_cfg: Annotated[float | None, typer.Option(help="True CFG scale. [default: per family; Qwen-Image 5]")] = None,
    device: Annotated[SampleDevice, typer.Option(help="auto: cuda, else mps, else cpu.")] = SampleDevice.auto,
    dtype: Annotated[InferDtype, typer.Option(help="auto: bfloat16 on a GPU, float32 on the CPU.")] = InferDtype.auto,
    cpu_offload: Annotated[
        bool, typer.Option("--cpu-offload", help="Keep each model on the CPU until it runs (less GPU memory).")
    ] = False,
    quantize: QuantizeOpt = Quantize.auto,
    gpu_memory: GpuMemoryOpt = None,
    compare: Annotated[
        str | None,
        typer.Option(
            "--compare",
            "--base-steps",
            metavar="STEPS",
            help="Also render every image with the base model (no LoRAs) at its own N-step schedule, to "
            "OUT-baseN.png, and a side-by-side sheet OUT-compare.png; several step counts (50,10) make a "
            "column each, glance last.",
        ),
    ] = None,
    num_processes: Annotated[
        int,
        typer.Option(
            "--num-processes", min=1, help="Spread the images over N processes (accelerate), one device each."
        ),
    ] = 1,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the run as JSON: the images with their records, load time, sheet.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the result lines.")] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also show diffusers' and transformers' own bars and messages.")
    ] = False,
    force: ForceOpt = False,
) -> None:
    """Render each PROMPT x seed with the slow LoRA on the first (high-noise) steps and the fast LoRA on the rest.

    The pipeline and both LoRAs load once. Each image is one pipeline call that runs exactly the
    sigmas the LoRAs were trained on (no schedule shift) and switches adapters after the last slow
    step; both are checked for every image. Model, lists, LoRA folders and resolution come from
    OUTPUT_DIR/glance.json; flags override them.
    """
    import sys

    from glance.batch import parse_compare, parse_seeds, read_prompts_file
    from glance.families import GlanceError
    from glance.infer import options_from_manifest, run_infer
    from glance.progress import Reporter
    from glance.schedule import parse_lists

    all_prompts = list(prompts or [])
    for prompt in all_prompts:
        if not prompt.strip():
            raise GlanceError("a prompt is blank")
    if prompts_file is not None:
        all_prompts += read_prompts_file(prompts_file)
    if not all_prompts:
        raise GlanceError('give a prompt (glance infer "a lighthouse at dawn") or --prompts FILE')
    lists = parse_lists(slow_timesteps, fast_timesteps)
    if lora_repo is not None:  # its manifest and LoRAs, downloaded (cached), read like a run folder
        from glance.share import fetch_pair

        output_dir = fetch_pair(lora_repo, lora_revision)
        out = out or Path("glance.png")  # never into the Hub cache
    options = options_from_manifest(
        output_dir,
        prompts=all_prompts,
        model=model,
        family=family.value if family is not None else None,
        slow_lora=slow,
        fast_lora=fast,
        lists=lists,
        out=out,
        seeds=parse_seeds(seeds),
        width=width,
        height=height,
        guidance=guidance,
        negative_prompt=negative_prompt,
        true_cfg=true_cfg,
        device=device.value,
        dtype=dtype.value,
        cpu_offload=cpu_offload,
        quantize=quantize.value,
        gpu_memory=gpu_memory,
        compare=parse_compare(compare) if compare is not None else None,
        num_processes=num_processes,
        force=force,
    )
    # With --json, stdout holds the JSON alone: the result lines go to stderr.
    reporter = Reporter(verbose=verbose, quiet=quiet, out=sys.stderr if as_json else None)
    run = run_infer(options, reporter)
    reporter.done()

    if as_json:
        print(json.dumps(run_record(run), indent=2))
        return
    if quiet:
        return
    print("step  sigma   -> next     adapter   (the same for every image, checked for each)")
    for record in run.images[0].trace:
        print(f"{record.step:>4}  {record.sigma:.4f} -> {record.sigma_next:.4f}   {', '.join(record.adapters)}")
    print(
        f"{len(run.images)} image(s); loading model + LoRAs {run.load_seconds:.1f} s"
        + (f" (per process, {run.processes} processes)" if run.processes > 1 else "")
    )


def run_record(run) -> dict:
    """The --json object: every image with its record, the load time, the sheet."""

    def image(result) -> dict:
        entry = {
            "path": str(result.image),
            "prompt": result.prompt,
            "seed": result.seed,
            "seconds": round(result.seconds, 3),
            "denoise_seconds": round(result.denoise_seconds, 3),
            "record": result.summary,
        }
        if result.bases:
            entry["bases"] = [image(base) for base in result.bases]  # one per --compare step count, in order
        return entry

    return {
        "images": [image(result) for result in run.images],
        "load_seconds": round(run.load_seconds, 3),
        "processes": run.processes,
        "sheet": str(run.sheet) if run.sheet is not None else None,
    }
