"""`glance export comfyui`: a finished run as ComfyUI files.

Four files: both LoRAs with their trained alpha as tensors (glance/comfyui_lora.py), an API-format
workflow that samples exactly the trained sigmas with the switch at the boundary (glance/comfyui.py),
and a README that says where each file goes and what not to change. `glance push` uploads the same
files under comfyui/.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from glance import __version__
from glance.card import COMFYUI_MINIMUM, sampling_kwargs
from glance.comfyui import (
    FAST_LORA_FILE,
    SLOW_LORA_FILE,
    WORKFLOW_FILE,
    ComfyUIFiles,
    WorkflowSpec,
    build_workflow,
    comfyui_setup,
    default_files,
    manual_sigmas_text,
)
from glance.comfyui_lora import ExportedLora, check_comfyui_keys, comfyui_lora_bytes, read_lora
from glance.families import GlanceError, get_family, is_local_model
from glance.files import check_writable_dir, needs_writing, write_atomic
from glance.loras import check_pair_fits
from glance.manifest import MANIFEST_NAME, PHASES, WEIGHTS_NAME, RunManifest, load_finished_run
from glance.schedule import switch_step

README_FILE = "README.md"
LORA_FILES = {"slow": SLOW_LORA_FILE, "fast": FAST_LORA_FILE}
DEFAULT_FOLDER = "comfyui"  # inside the run folder


class ExportOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    output_dir: Path = Path("output")
    out: Path | None = None  # default: OUTPUT_DIR/comfyui
    prompt: str | None = None  # default: the training caption
    seed: int = Field(0, ge=0, le=0xFFFFFFFFFFFFFFFF)
    model_file: str | None = None
    text_encoders: tuple[str, ...] | None = None
    vae_file: str | None = None
    force: bool = False

    @property
    def folder(self) -> Path:
        return self.out if self.out is not None else self.output_dir / DEFAULT_FOLDER


@dataclass
class ComfyUIExport:
    folder: Path
    family: str
    prompt: str
    seed: int
    files: dict[str, bytes]  # name in the folder -> content
    loras: dict[str, ExportedLora]
    model_files: ComfyUIFiles
    written: list[Path] = field(default_factory=list)  # the files that were new or changed

    def summary(self) -> dict:
        """What --json prints."""
        return {
            "folder": str(self.folder),
            "family": self.family,
            "prompt": self.prompt,
            "seed": self.seed,
            "files": [str(self.folder / name) for name in self.files],
            "written": [str(path) for path in self.written],
            "loras": {
                phase: {
                    "file": LORA_FILES[phase],
                    "source": str(lora.source),
                    "rank": lora.rank,
                    "alpha": lora.alpha,
                    "alpha_from": lora.alpha_from,
                    "modules": len(lora.modules),
                }
                for phase, lora in self.loras.items()
            },
            "model_files": self.model_files.model_dump(mode="json"),
        }


def export_comfyui(options: ExportOptions) -> ComfyUIExport:
    """Build every file first, then write them; a file that differs is only replaced with --force."""
    manifest = load_finished_run(options.output_dir)
    prompt = options.prompt if options.prompt is not None else training_caption(options.output_dir)
    folder = options.folder
    if folder.exists() and not folder.is_dir():
        raise GlanceError(f"--out {folder} is a file; give a folder")
    if options.model_file is None:
        _check_default_model_file(manifest, options.output_dir / MANIFEST_NAME)
    export = comfyui_files(
        manifest,
        options.output_dir / MANIFEST_NAME,
        prompt=prompt,
        seed=options.seed,
        base_model=manifest.model,
        files=default_files(
            manifest.family,
            manifest.model,
            model_file=options.model_file,
            text_encoders=options.text_encoders,
            vae_file=options.vae_file,
        ),
    )
    export.folder = folder
    check_writable_dir(folder)
    changed = [name for name, data in export.files.items() if needs_writing(folder / name, data, options.force)]
    for name in changed:
        write_atomic(folder / name, export.files[name])
    export.written = [folder / name for name in changed]
    return export


def _check_default_model_file(manifest: RunManifest, manifest_path: Path) -> None:
    """The workflow loads the ComfyUI file of a Hub model: the run's own, else its family's first. LoRAs made for
    another transformer (a run on a small local model) would not apply there: --model-file names the right file."""
    hub_ids = get_family(manifest.family).hub_ids
    model = manifest.model if manifest.model in hub_ids else hub_ids[0]
    file = default_files(manifest.family, model).model
    weights = {phase: manifest.lora_dir(phase, manifest_path) / WEIGHTS_NAME for phase in PHASES}
    try:
        check_pair_fits(weights, model)
    except GlanceError as exc:
        raise GlanceError(
            f"{exc}; the workflow would load its file {file}: pass --model-file with the ComfyUI file of the model "
            f"the run trained on ({manifest.model})"
        ) from None


def training_caption(output_dir: Path) -> str:
    """The caption the run trained on, as staged in OUTPUT_DIR/dataset."""
    dataset = Path(output_dir) / "dataset"
    captions = sorted(dataset.glob("*.txt")) if dataset.is_dir() else []
    if len(captions) != 1:
        raise GlanceError(f"no training caption staged in {dataset}; pass --prompt")
    return captions[0].read_text(encoding="utf-8").strip()


def comfyui_files(
    manifest: RunManifest, manifest_path: Path, *, prompt: str, seed: int, base_model: str, files: ComfyUIFiles
) -> ComfyUIExport:
    """The four files, in memory: both LoRAs, the workflow, the README."""
    setup = comfyui_setup(manifest.family, manifest.model)
    lists = manifest.lists
    loras = {phase: read_lora(phase, manifest.lora_dir(phase, manifest_path)) for phase in PHASES}
    for lora in loras.values():
        check_comfyui_keys(lora, manifest.family, setup.lora_modules)
    guidance = sampling_kwargs(manifest)  # the guidance glance infer samples this run with by default
    spec = WorkflowSpec(
        family=manifest.family,
        model=manifest.model,
        prompt=prompt,
        negative_prompt=guidance.get("negative_prompt"),
        seed=seed,
        width=manifest.resolution,
        height=manifest.resolution,
        sigmas=lists.sigmas,
        switch=switch_step(lists),
        guidance=guidance.get("guidance_scale"),
        true_cfg=guidance.get("true_cfg_scale"),
        files=files,
    )
    content: dict[str, bytes] = {}
    for phase, lora in loras.items():
        timesteps = lists.slow if phase == "slow" else lists.fast
        header = {
            "glance.version": __version__,
            "glance.phase": phase,
            "glance.family": manifest.family,
            "glance.base_model": base_model,
            "glance.rank": str(lora.rank),
            "glance.alpha": repr(lora.alpha),
            "glance.timesteps": json.dumps(list(timesteps)),
            "glance.sigmas": json.dumps(lists.slow_sigmas if phase == "slow" else lists.fast_sigmas),
        }
        content[LORA_FILES[phase]] = comfyui_lora_bytes(lora, header)
    content[WORKFLOW_FILE] = (json.dumps(build_workflow(spec), indent=2, ensure_ascii=False) + "\n").encode()
    content[README_FILE] = readme(manifest, spec, loras, base_model).encode()
    return ComfyUIExport(Path(DEFAULT_FOLDER), manifest.family, prompt, seed, content, loras, files)


def readme(manifest: RunManifest, spec: WorkflowSpec, loras: dict[str, ExportedLora], base_model: str) -> str:
    """Where each file goes in a ComfyUI install, and what must stay as it is."""
    setup = comfyui_setup(manifest.family, manifest.model)
    files = spec.files
    slow, total = switch_step(manifest.lists), len(spec.sigmas)
    model_folder = "checkpoints" if setup.model_loader == "CheckpointLoaderSimple" else "diffusion_models"
    rows = [
        (f"`{SLOW_LORA_FILE}`, `{FAST_LORA_FILE}`", "`ComfyUI/models/loras/`"),
        (f"`{files.model}` (the base model)", f"`ComfyUI/models/{model_folder}/`"),
        (", ".join(f"`{name}`" for name in files.text_encoders), "`ComfyUI/models/text_encoders/`"),
    ]
    if files.vae is not None:
        rows.append((f"`{files.vae}`", "`ComfyUI/models/vae/`"))
    table = "| file | goes into |\n| --- | --- |\n" + "".join(f"| {a} | {b} |\n" for a, b in rows)
    lora = loras["slow"]
    keep = [
        f"- **ManualSigmas** (`{manual_sigmas_text(spec.sigmas)}`): the sigmas the LoRAs were trained on. "
        "A KSampler, a BasicScheduler or a ModelSampling node would re-derive (shift) them.",
        f"- **SplitSigmas step {slow}**: the slow LoRA runs the first {slow} steps, the fast LoRA the other "
        f"{total - slow}, each on the sigmas it learnt.",
        "- **KSamplerSelect `euler`** and **DisableNoise** on the second sampler: it continues the first "
        "sampler's latent; new noise there would restart it.",
        f"- **LoraLoaderModelOnly strength 1.0**: the files carry the trained alpha ({lora.alpha:g} at rank "
        f"{lora.rank}, a scale of {lora.alpha / lora.rank:g}) as `.alpha` tensors; without them ComfyUI "
        "would run the LoRAs at scale 1.",
    ]
    if setup.guidance == "flux_guidance":
        keep.append(f"- **FluxGuidance {spec.guidance:g}**: the guidance the LoRAs were trained at.")
    if setup.guidance == "cfg_plus_one" and spec.guidance is not None and spec.guidance > 0:
        keep.append(
            f"- **CFGGuider cfg {spec.guidance + 1:g}**: Z-Image's guidance {spec.guidance:g} "
            f"(`ZImagePipeline(guidance_scale={spec.guidance:g})`, pos + s x (pos - neg), no CFG at 0) is "
            "ComfyUI's cfg s + 1."
        )
    if setup.t5_tokenizer_options is not None:
        min_padding, min_length = setup.t5_tokenizer_options
        keep.append(
            f"- **T5TokenizerOptions** (min_padding {min_padding}, min_length {min_length}): pads the T5 prompt "
            "as the diffusers pipeline the LoRAs were trained and sampled with does; the model attends to "
            "the padding, and ComfyUI's own default differs."
        )
    notes = []
    if setup.guidance == "true_cfg" and spec.true_cfg is not None:
        notes.append(
            f"- Qwen-Image samples with true CFG {spec.true_cfg:g} against the negative prompt "
            f"{json.dumps(spec.negative_prompt)}, and diffusers rescales each 2x2-patch token of the result to "
            "the norm of the conditional prediction. ComfyUI's core has no such node: the workflow uses "
            "CFGGuider and CFGNorm, which rescales per latent pixel on the denoised image and only scales "
            "down. The sigmas, the switch and the LoRA strength are exact; the images are close to "
            "`glance infer`'s, not equal."
        )
    if spec.sigmas[0] < 1.0:
        notes.append(
            f"- The slow list starts at sigma {spec.sigmas[0]:g}, not 1: ComfyUI starts from noise scaled to that "
            "sigma, diffusers (and `glance infer`) from unscaled noise."
        )
    if manifest.family == "chroma":
        notes.append(
            "- ComfyUI runs Chroma's T5 without an attention mask, ChromaPipeline masks the pad token inside "
            "T5: the text embedding is close, not equal."
        )
    notes.append(
        "- ComfyUI encodes the prompt and steps with its own implementations of the model, so its pixels "
        "are not `glance infer`'s even where the graph is the same."
    )
    notes.append(
        "- ComfyUI's SaveImage floors each pixel value (x 255, then a cast to uint8) where diffusers rounds: "
        "from the very same latent its PNG may differ from glance's by one level."
    )
    if _is_shipped_model(manifest):
        notes.append(
            "- This run's base model is glance's shipped shapes model (`glance demo`): ComfyUI cannot load it, "
            "as its FLUX loader assumes a head dimension of 128 and the shapes model's is 64. The export "
            "shows the files and the graph a FLUX.1-dev run gets."
        )
    local = is_local_model(base_model) or Path(base_model).is_absolute()
    on = f"`{base_model}`" if local else f"[{base_model}](https://huggingface.co/{base_model})"
    return f"""# A Glance LoRA pair for ComfyUI

Trained with glance on {on} ({manifest.family}), at
{manifest.resolution} px: `glance-slow` learnt the first, high-noise steps and `glance-fast` the later ones.
Together they sample in {total} steps, on exactly the sigmas they were trained on.

Needs **{COMFYUI_MINIMUM}** (the workflow's ManualSigmas node first shipped in 0.7.0).

## Where the files go

{table}
Your files have other names? Pick them in the loader nodes, or export again with `--model-file`,
`--text-encoder` and `--vae`.

## Sample

Drag `{WORKFLOW_FILE}` onto the ComfyUI window (any PNG glance rendered opens the same way), or queue it
through ComfyUI's API: POST `{{"prompt": <the file's content>}}` to `http://127.0.0.1:8188/prompt`.
Change the prompt (node "Prompt") and the seed (node "Seed") as you like.

## Do not change

{chr(10).join(keep)}

## How it differs from `glance infer`

{chr(10).join(notes)}
"""


def _is_shipped_model(manifest: RunManifest) -> bool:
    from glance.smallmodel import MODEL_DIR

    return any(path and Path(path).resolve() == MODEL_DIR for path in (manifest.model_path, manifest.model))
