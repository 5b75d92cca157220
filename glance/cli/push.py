"""`glance push`: a finished run to the Hub, with a model card that reproduces its sampling."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from glance.cli._common import OutputDirOpt, cli_errors, examples

EPILOG = examples(
    "glance push you/lighthouse-glance",
    'glance push you/lighthouse-glance --sample "a lighthouse at dawn" --private',
    "glance push you/my-pair -o runs/tiny --base-model black-forest-labs/FLUX.1-dev --dry-run",
)


@cli_errors
def push_command(
    repo_id: Annotated[str, typer.Argument(help="The model repo to push to, namespace/name; created when missing.")],
    output_dir: OutputDirOpt = Path("output"),
    base_model: Annotated[
        str | None,
        typer.Option(help="The base model's Hub id, for the card. Needed when the run trained on a local folder."),
    ] = None,
    sample: Annotated[
        list[str] | None,
        typer.Option("--sample", help="Render this prompt with `glance infer` first and push the image (repeatable)."),
    ] = None,
    include_training_image: Annotated[
        bool,
        typer.Option(
            "--include-training-image", help="Also push the training image and caption (off: it may be private)."
        ),
    ] = False,
    private: Annotated[bool, typer.Option("--private", help="Create the repo private.")] = False,
    revision: Annotated[
        str | None, typer.Option("--revision", "--branch", help="Branch to push to; created from main when missing.")
    ] = None,
    message: Annotated[str | None, typer.Option("--message", help="Commit message.")] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Build the folder in OUTPUT_DIR/push, print its files and the card; upload nothing."
        ),
    ] = False,
) -> None:
    """Upload both LoRAs, the run manifest (no local paths), this run's sample images and a model card.

    The card holds a plain diffusers snippet that samples the pair on exactly its trained sigmas,
    and the `glance infer --lora-repo` line that does the same. Samples are the PNGs `glance infer`
    rendered with this run's LoRAs (matched by the LoRA files' hashes), found in OUTPUT_DIR/samples, where
    `glance infer` writes by default, and OUTPUT_DIR.
    The upload is one commit: it lands whole or not at all, and replaces the samples of an earlier
    push. Log in first: `hf auth login`.
    """
    from glance.share import PushOptions, build_folder, check_repo_id, default_folder, push

    options = PushOptions(
        repo_id=repo_id,
        output_dir=output_dir,
        base_model=base_model,
        private=private,
        revision=revision,
        include_training_image=include_training_image,
        sample_prompts=tuple(sample or ()),
        message=message,
    )
    if dry_run:
        check_repo_id(repo_id)
        built = build_folder(options, default_folder(output_dir))
        print(built.card)
        _print_files(built, f"would upload {len(built.files)} files from {built.folder} to {repo_id}:")
        return
    result = push(options)
    _print_files(result, f"pushed {len(result.files)} files to {repo_id}: {result.url}")
    print(f'sample it: glance infer --lora-repo {repo_id} "your prompt"')


def _print_files(result, heading: str) -> None:
    """The repo's files, each sample with its prompt and seed; on stderr, the images passed over and why."""
    for line in result.skipped:
        print(f"not pushed: {line}", file=sys.stderr)
    print(heading)
    samples = {sample.path: sample for sample in result.samples}
    for name in result.files:
        sample = samples.get(name)
        print(f"  {name}" + (f"  (seed {sample.seed}: {sample.prompt})" if sample is not None else ""))
