"""What a model family is: its scheduler settings, recipe, ComfyUI setup and the hooks a family may override.

glance/families.py holds the families themselves; this module holds their types and the small reads of a
model folder they need. Nothing here imports torch or diffusers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path


class GlanceError(ValueError):
    """A user-facing error: the CLI prints its message as one line and exits non-zero."""


@dataclass(frozen=True)
class SchedulerSettings:
    """The parts of a FlowMatchEulerDiscreteScheduler config that decide its sigmas."""

    shift: float = 1.0
    use_dynamic_shifting: bool = False
    base_shift: float = 0.5
    max_shift: float = 1.15
    base_image_seq_len: int = 256
    max_image_seq_len: int = 4096
    shift_terminal: float | None = None
    time_shift_type: str = "exponential"

    @classmethod
    def from_config(cls, config: dict) -> SchedulerSettings:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in config.items() if k in names and v is not None})


@dataclass(frozen=True)
class Recipe:
    """Training and sampling defaults from the Glance paper (arXiv 2512.02899)."""

    rank: int
    learning_rate: float
    steps: int = 60
    warmup_steps: int = 10
    alpha_per_rank: int = 4  # paper: alpha = 4 x rank
    train_guidance: float | None = None  # FLUX's distilled guidance embedding during training
    # Sampling guidance, diffusers' guidance_scale: embedded for FLUX; CFG for SD3 and Chroma (on above 1);
    # Z-Image's CFG pos + s * (pos - neg) (on above 0: 0 is no CFG, and ComfyUI's cfg is s + 1).
    guidance: float = 1.0
    true_cfg: float | None = None  # Qwen-Image samples with true CFG
    negative_prompt: str | None = None


@dataclass(frozen=True)
class ComfyUISetup:
    """How ComfyUI's core nodes load and sample the family: the per-family part of `glance export comfyui`.

    Node names and inputs are ComfyUI's (nodes.py, comfy_extras/nodes_sd3.py, nodes_flux.py,
    nodes_cfg.py); file names are those of the Comfy-Org repackaged models ComfyUI's own examples load.
    """

    model_loader: str  # "UNETLoader" (models/diffusion_models) or "CheckpointLoaderSimple" (models/checkpoints)
    model_file: str  # the file ComfyUI users have for the family's first hub model
    text_encoder_loader: str  # "DualCLIPLoader", "TripleCLIPLoader" or "CLIPLoader" (models/text_encoders)
    text_encoder_files: tuple[str, ...]
    clip_type: str | None  # the text encoder loader's `type` input (TripleCLIPLoader has none)
    vae_file: str | None  # models/vae; None: the checkpoint's own VAE
    # How diffusers' guidance arguments become nodes: "flux_guidance" (FluxGuidance on the prompt),
    # "cfg" (CFGGuider when guidance_scale > 1), "cfg_plus_one" (CFGGuider at cfg = guidance_scale + 1 when
    # guidance_scale > 0: Z-Image), "true_cfg" (CFGGuider + CFGNorm, see glance/comfyui.py).
    guidance: str
    lora_modules: tuple[str, ...]  # regexes: the module names ComfyUI's key map accepts (see above)
    model_files: dict[str, str] = field(default_factory=dict)  # hub id -> file, where it differs from model_file
    empty_latent_node: str = "EmptySD3LatentImage"  # the node making the start latent (16 channels for SD3/FLUX)
    # T5TokenizerOptions (comfy_extras/nodes_cond.py) (min_padding, min_length) where ComfyUI pads the T5 prompt
    # otherwise than diffusers, whose model attends to the padding; None: the family's text side needs no node.
    t5_tokenizer_options: tuple[int, int] | None = None


@dataclass(frozen=True)
class Family:
    name: str  # SimpleTuner's model_family
    pipeline_class: str  # diffusers class name: the default, and what a hub id is loaded with
    hub_ids: tuple[str, ...]
    scheduler: SchedulerSettings
    recipe: Recipe
    patch_size: int = 2  # latent pixels per transformer token, per side
    # How the pipeline seeds its default schedule (glance/schedule.py, default_grid): FLUX and Qwen pass
    # linspace(1, 1/N, N) sigmas ("linspace"); SD3 passes none, so the scheduler spaces timesteps
    # between its own sigma_max and sigma_min ("scheduler").
    default_sigmas: str = "linspace"
    min_image_side: int = 64  # SimpleTuner's aspect alignment
    # Keys written into both phases' SimpleTuner configs as they are (TrainingConfig fields).
    simpletuner_extras: dict = field(default_factory=dict)
    comfyui: ComfyUISetup | None = None
    # More diffusers classes of this family, detected from a model's model_index.json and loaded as named there.
    pipeline_classes: tuple[str, ...] = ()
    model_flavour: str | None = None  # SimpleTuner's model_flavour; None: not written (see flavour_for)
    refused_hub_ids: dict[str, str] = field(default_factory=dict)  # hub id -> why glance does not train it

    @property
    def all_pipeline_classes(self) -> tuple[str, ...]:
        return (self.pipeline_class, *self.pipeline_classes)

    def flavour_for(self, model: str) -> str | None:
        """The `model_flavour` SimpleTuner trains `model` (a local folder or hub id) with; None: leave it unset.

        SimpleTuner picks a family's code path and its extra downloads (assistant LoRAs, other text
        encoders) by flavour, not by the model's files, so a family whose models differ says which here.
        """
        return self.model_flavour

    def text_encoder_parts(self, model: str) -> tuple[str, tuple[Path, ...]] | None:
        """(hub id, folders of `model`) when SimpleTuner loads the text encoder by a fixed hub id, not from the
        model: glance then serves those folders as that repo from a run-private Hub cache. None: from the model."""
        return None

    def for_model(self, model: str) -> Family:
        """This family as `model` is sampled: a family whose flavours sample differently (FLUX.2) narrows here."""
        return self

    def pipeline_class_for(self, model: str) -> str:
        """The diffusers class to load `model` with: the one its model_index.json names, if it is this family's."""
        if is_local_model(model):
            index = Path(model).expanduser() / "model_index.json"
            if index.is_file():
                named = read_json(index).get("_class_name")
                if named in self.all_pipeline_classes:
                    return named
        return self.pipeline_class

    def image_seq_len(self, width: int, height: int, vae_scale_factor: int = 8) -> int:
        """Packed image tokens the pipeline computes mu from (1024x1024 at /8 /2 -> 4096)."""
        per_token = vae_scale_factor * self.patch_size
        return (height // per_token) * (width // per_token)


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def is_local_model(model: str) -> bool:
    return Path(model).expanduser().is_dir()


def is_hub_id(model: str) -> bool:
    """`owner/name`, as the Hub spells repo ids (a path like ./x/y or ~/x is a folder, not an id)."""
    return bool(_HUB_ID.fullmatch(model)) and not model.startswith((".", "~"))


def model_not_found(model: str) -> GlanceError:
    return GlanceError(f"model not found: {model} is neither a folder nor a Hub id (owner/name)")


def read_json(path: Path) -> dict:
    """A JSON file glance reads (a model's or SimpleTuner's config); a fault is one clear line."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GlanceError(f"cannot read {path}: {exc}") from None
