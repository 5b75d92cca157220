"""Per-family facts: the one place where FLUX, SD3, Qwen-Image, Chroma, Z-Image and FLUX.2 differ.

Adding a model family means adding one `Family` here (and its tiny test model, glance/tiny/<family>.py).
Nothing in this module imports torch or diffusers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
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


# ComfyUI's LoRA key maps (comfy/lora.py, model_lora_keys_unet): the diffusers module names it accepts
# under "transformer.", as regexes. FLUX and SD3 translate them to their own fused layers
# (comfy/utils.py flux_to_diffusers, mmdit_to_diffusers); Qwen-Image's ComfyUI model keeps diffusers'
# names (comfy/ldm/qwen_image/model.py), so every Linear of it maps. A key outside its map ComfyUI
# skips with only a "lora key not loaded" warning: export refuses it instead.
_DOUBLE_BLOCK = (
    r"transformer_blocks\.\d+\.(attn\.(to_[qkv]|add_[qkv]_proj|to_out\.0|to_add_out)"
    r"|norm1\.linear|norm1_context\.linear|ff\.net\.(0\.proj|2)|ff_context\.net\.(0\.proj|2))"
)
_FLUX_LORA_MODULES = (
    _DOUBLE_BLOCK,
    r"single_transformer_blocks\.\d+\.(attn\.to_[qkv]|proj_mlp|norm\.linear|proj_out)",
    r"proj_out|x_embedder|context_embedder|norm_out\.linear",
    r"time_text_embed\.(timestep|text|guidance)_embedder\.linear_[12]",
)
_SD3_LORA_MODULES = (
    _DOUBLE_BLOCK,
    r"transformer_blocks\.\d+\.attn2\.(to_[qkv]|to_out\.0)",  # SD3.5 Medium's second attention
    r"proj_out|pos_embed\.proj|context_embedder|norm_out\.linear",
    r"time_text_embed\.(timestep|text)_embedder\.linear_[12]",
)
# Chroma is FLUX without the modulation layers (ComfyUI: model_base.Chroma(Flux), the same flux_to_diffusers).
_CHROMA_LORA_MODULES = (
    r"transformer_blocks\.\d+\.(attn\.(to_[qkv]|add_[qkv]_proj|to_out\.0|to_add_out)"
    r"|ff\.net\.(0\.proj|2)|ff_context\.net\.(0\.proj|2))",
    r"single_transformer_blocks\.\d+\.(attn\.to_[qkv]|proj_mlp|proj_out)",
    r"proj_out|x_embedder|context_embedder",
)
# Z-Image: ComfyUI's Lumina2 branch of the key map, comfy/utils.py z_image_to_diffusers (q, k, v into its qkv).
_Z_IMAGE_LORA_MODULES = (
    r"(layers|noise_refiner|context_refiner)\.\d+\.(attention\.(to_[qkv]|to_out\.0)"
    r"|feed_forward\.w[123]|adaLN_modulation\.0)",
    r"all_final_layer\.2-1\.(linear|adaLN_modulation\.1)|all_x_embedder\.2-1|cap_embedder\.1|t_embedder\.mlp\.[02]",
)
_QWEN_IMAGE_LORA_MODULES = (
    r"transformer_blocks\.\d+\.(attn\.(to_[qkv]|add_[qkv]_proj|to_out\.0|to_add_out)"
    r"|(img|txt)_mod\.1|(img|txt)_mlp\.net\.(0\.proj|2))",
    r"proj_out|img_in|txt_in|norm_out\.linear|time_text_embed\.timestep_embedder\.linear_[12]",
)


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


# FLUX.2 [klein] base and [dev]: ComfyUI's core Flux2 model (comfy/model_base.py, class Flux2(Flux)); the file names
# are those of the Comfy-Org/flux2-klein and Comfy-Org/flux2-dev repackaged models.
_FLUX2_LORA_MODULES = (
    r"transformer_blocks\.\d+\.attn\.(to_[qkv]|to_out\.0)",
    r"single_transformer_blocks\.\d+\.attn\.to_qkv_mlp_proj",
)
FLUX2_DEV_TEXT_ENCODER_REPO = "mistralai/Mistral-Small-3.1-24B-Instruct-2503"  # SimpleTuner's MISTRAL_PATH
_FLUX2_KLEIN_COMFYUI = ComfyUISetup(
    model_loader="UNETLoader",
    model_file="flux-2-klein-base-4b.safetensors",
    model_files={"black-forest-labs/FLUX.2-klein-base-9B": "flux-2-klein-base-9b.safetensors"},
    text_encoder_loader="CLIPLoader",
    text_encoder_files=("qwen_3_4b.safetensors",),  # klein 9B: qwen_3_8b (Family.flavours)
    clip_type="flux2",
    vae_file="flux2-vae.safetensors",
    guidance="cfg",
    lora_modules=_FLUX2_LORA_MODULES,
    empty_latent_node="EmptyFlux2LatentImage",
)
_FLUX2_HUB_FLAVOURS = {
    "black-forest-labs/FLUX.2-klein-base-4B": "klein-4b",
    "black-forest-labs/FLUX.2-klein-base-9B": "klein-9b",
    "black-forest-labs/FLUX.2-dev": "dev",
}
# BFL's step-distilled [klein] (4 steps, no CFG): other weights than the base models a fine-tune starts from.
_FLUX2_DISTILLED = {
    f"black-forest-labs/FLUX.2-klein-{size}": (
        f"BFL's step-distilled FLUX.2 [klein] (4 steps already); glance trains on the base model: "
        f"--model black-forest-labs/FLUX.2-klein-base-{size}"
    )
    for size in ("4B", "9B")
}


@dataclass(frozen=True)
class Flux2Family(Family):
    """FLUX.2: one SimpleTuner family (`flux2`) whose code path SimpleTuner picks by `model_flavour` alone.

    klein-4b / klein-9b load the model's own Qwen3 text encoder; any other flavour, none included,
    loads the 24B Mistral encoder from the Hub (SimpleTuner flux2/model.py:443-446, 542). So the flavour
    is always written, read from the model itself. [klein] base samples with true CFG (guidance_scale
    above 1, against an empty prompt); [dev] with an embedded guidance like FLUX.1. `flavours`: what a
    flavour changes of the family (dataclasses.replace keywords), applied by `for_model`.
    """

    flavours: dict[str, dict] = field(default_factory=dict)

    def flavour_for(self, model: str) -> str:
        if not is_local_model(model):
            if model in self.refused_hub_ids:
                raise GlanceError(f"{model}: {self.refused_hub_ids[model]}")
            if model in _FLUX2_HUB_FLAVOURS:
                return _FLUX2_HUB_FLAVOURS[model]
            raise GlanceError(
                f"cannot tell whether {model} is FLUX.2 [klein] 4B, 9B or [dev] without its files; "
                "download it and pass the local folder"
            )
        root = Path(model).expanduser()
        index_path = root / "model_index.json"
        index = read_json(index_path) if index_path.is_file() else {}
        if index.get("_class_name") == "Flux2Pipeline":
            return "dev"
        if index.get("is_distilled"):
            raise GlanceError(f"{model} is a step-distilled FLUX.2 [klein] (is_distilled); train on a base model")
        # klein 4B reads Qwen3-4B (width 2560), 9B Qwen3-8B (4096); the transformer takes three of its layers.
        encoder, transformer = root / "text_encoder" / "config.json", root / "transformer" / "config.json"
        if encoder.is_file():
            width = read_json(encoder).get("hidden_size")
        elif transformer.is_file():
            width = read_json(transformer).get("joint_attention_dim", 0) // 3
        else:
            raise GlanceError(f"{model} has no text_encoder/config.json: cannot tell FLUX.2 [klein] 4B from 9B")
        return "klein-9b" if width and width >= 4096 else "klein-4b"

    def text_encoder_parts(self, model: str) -> tuple[str, tuple[Path, ...]] | None:
        """[dev]: SimpleTuner 4.10.1 loads the Mistral encoder and its processor from the Hub's repo, always
        (flux2/model.py:542; `pretrained_text_encoder_model_name_or_path` is read there but is no option of its
        parser), while the model's own folder holds them as text_encoder/ and tokenizer/."""
        if not is_local_model(model) or self.flavour_for(model) != "dev":
            return None
        root = Path(model).expanduser()
        return FLUX2_DEV_TEXT_ENCODER_REPO, (root / "text_encoder", root / "tokenizer")

    def for_model(self, model: str) -> Family:
        try:
            flavour = self.flavour_for(model)
        except GlanceError:
            return self  # refused where it matters (training); here the klein defaults stand
        return replace(self, **self.flavours[flavour]) if flavour in self.flavours else self


FAMILIES: dict[str, Family] = {
    "flux": Family(
        name="flux",
        pipeline_class="FluxPipeline",
        hub_ids=("black-forest-labs/FLUX.1-dev",),
        scheduler=SchedulerSettings(
            shift=3.0,
            use_dynamic_shifting=True,
            base_shift=0.5,
            max_shift=1.15,
            base_image_seq_len=256,
            max_image_seq_len=4096,
        ),
        recipe=Recipe(rank=16, learning_rate=5e-4, train_guidance=1.0, guidance=1.0),
        simpletuner_extras={"flux_guidance_mode": "constant"},
        comfyui=ComfyUISetup(
            model_loader="UNETLoader",
            model_file="flux1-dev.safetensors",
            text_encoder_loader="DualCLIPLoader",
            text_encoder_files=("clip_l.safetensors", "t5xxl_fp16.safetensors"),
            clip_type="flux",
            vae_file="ae.safetensors",
            guidance="flux_guidance",
            lora_modules=_FLUX_LORA_MODULES,
            t5_tokenizer_options=(0, 512),  # ComfyUI pads to 256 (comfy/text_encoders/flux.py), FluxPipeline to 512
        ),
    ),
    "sd3": Family(
        name="sd3",
        pipeline_class="StableDiffusion3Pipeline",
        hub_ids=(
            "stabilityai/stable-diffusion-3-medium-diffusers",
            "stabilityai/stable-diffusion-3.5-medium",
            "stabilityai/stable-diffusion-3.5-large",
        ),
        scheduler=SchedulerSettings(shift=3.0),
        default_sigmas="scheduler",
        # The paper has no SD3 recipe; FLUX's is the nearest (same size class, same rank).
        recipe=Recipe(rank=16, learning_rate=5e-4, guidance=1.0),
        comfyui=ComfyUISetup(
            model_loader="CheckpointLoaderSimple",  # SD3 checkpoints carry their VAE
            model_file="sd3_medium.safetensors",
            model_files={
                "stabilityai/stable-diffusion-3.5-medium": "sd3.5_medium.safetensors",
                "stabilityai/stable-diffusion-3.5-large": "sd3.5_large.safetensors",
            },
            text_encoder_loader="TripleCLIPLoader",
            text_encoder_files=("clip_l.safetensors", "clip_g.safetensors", "t5xxl_fp16.safetensors"),
            clip_type=None,
            vae_file=None,
            guidance="cfg",
            lora_modules=_SD3_LORA_MODULES,
            t5_tokenizer_options=(0, 256),  # ComfyUI pads to 77 (comfy/text_encoders/sd3_clip.py), diffusers to 256
        ),
    ),
    "qwen_image": Family(
        name="qwen_image",
        pipeline_class="QwenImagePipeline",
        # Qwen-Image-2512 (SimpleTuner's flavour v2.0) is the same pipeline, classes and scheduler; it is
        # trained, like v1, without a flavour (v2.0 is on SimpleTuner's assistant-LoRA list).
        hub_ids=("Qwen/Qwen-Image", "Qwen/Qwen-Image-2512"),
        scheduler=SchedulerSettings(
            shift=1.0,
            use_dynamic_shifting=True,
            base_shift=0.5,
            max_shift=0.9,
            base_image_seq_len=256,
            max_image_seq_len=8192,
            shift_terminal=0.02,
            time_shift_type="exponential",
        ),
        recipe=Recipe(rank=32, learning_rate=3e-4, true_cfg=5.0, negative_prompt=" "),
        comfyui=ComfyUISetup(
            model_loader="UNETLoader",
            model_file="qwen_image_bf16.safetensors",
            model_files={"Qwen/Qwen-Image-2512": "qwen_image_2512_bf16.safetensors"},
            text_encoder_loader="CLIPLoader",
            text_encoder_files=("qwen_2.5_vl_7b_fp8_scaled.safetensors",),
            clip_type="qwen_image",
            vae_file="qwen_image_vae.safetensors",
            guidance="true_cfg",
            lora_modules=_QWEN_IMAGE_LORA_MODULES,
        ),
    ),
    "chroma": Family(
        name="chroma",
        pipeline_class="ChromaPipeline",
        hub_ids=("lodestones/Chroma1-HD",),
        # FLUX.1-dev's settings: ChromaPipeline seeds linspace sigmas and computes mu as FluxPipeline does.
        scheduler=SchedulerSettings(
            shift=3.0,
            use_dynamic_shifting=True,
            base_shift=0.5,
            max_shift=1.15,
            base_image_seq_len=256,
            max_image_seq_len=4096,
        ),
        # No published Glance recipe: FLUX's (an 8.9B pruned FLUX); CFG 4 as Chroma's own workflows sample.
        recipe=Recipe(rank=16, learning_rate=5e-4, guidance=4.0),
        # SimpleTuner respaces every sampled sigma for Chroma (s < 0.5 -> s^2, else 1 - (1 - s)^2,
        # chroma/model.py:854-865) unless the uniform schedule is on; with it, the custom list is what trains.
        simpletuner_extras={"flow_use_uniform_schedule": True},
        comfyui=ComfyUISetup(
            model_loader="UNETLoader",
            model_file="Chroma1-HD.safetensors",
            text_encoder_loader="CLIPLoader",
            text_encoder_files=("t5xxl_fp16.safetensors",),
            clip_type="chroma",
            vae_file="ae.safetensors",
            guidance="cfg",
            lora_modules=_CHROMA_LORA_MODULES,
            # ComfyUI's Chroma T5 pads nothing (comfy/text_encoders/pixart_t5.py); ChromaPipeline keeps one pad token.
            t5_tokenizer_options=(1, 0),
        ),
    ),
    "z_image": Family(
        name="z_image",
        pipeline_class="ZImagePipeline",
        hub_ids=("Tongyi-MAI/Z-Image",),
        # Static shift 6.0 (the base's scheduler config; Turbo's is 3.0): ZImagePipeline passes linspace sigmas.
        scheduler=SchedulerSettings(shift=6.0),
        # No published Glance recipe: FLUX's. guidance is Z-Image's CFG s (ComfyUI cfg s + 1); 0 turns it off.
        recipe=Recipe(rank=16, learning_rate=5e-4, guidance=4.0),
        # "base" and no assistant LoRA: SimpleTuner's turbo flavours download ostris' training adapter.
        model_flavour="base",
        simpletuner_extras={"disable_assistant_lora": True},
        comfyui=ComfyUISetup(
            model_loader="UNETLoader",
            model_file="z_image_bf16.safetensors",
            text_encoder_loader="CLIPLoader",
            text_encoder_files=("qwen_3_4b.safetensors",),
            clip_type="lumina2",
            vae_file="ae.safetensors",
            guidance="cfg_plus_one",
            lora_modules=_Z_IMAGE_LORA_MODULES,
        ),
    ),
    "flux2": Flux2Family(
        name="flux2",
        pipeline_class="Flux2KleinPipeline",
        pipeline_classes=("Flux2Pipeline",),
        hub_ids=tuple(_FLUX2_HUB_FLAVOURS),
        refused_hub_ids=_FLUX2_DISTILLED,
        # SimpleTuner's copy of the hub config (flux2/model.py SCHEDULER_CONFIG); with empirical mu only the
        # exponential time shift is used: the pipelines pass mu = compute_empirical_mu(tokens, steps).
        scheduler=SchedulerSettings(
            shift=3.0,
            use_dynamic_shifting=True,
            base_shift=0.5,
            max_shift=1.15,
            base_image_seq_len=256,
            max_image_seq_len=4096,
        ),
        default_sigmas="empirical_mu",
        # FLUX's paper recipe (rank 16, 5e-4); [klein] base is sampled with true CFG 4 (its pipeline's default).
        recipe=Recipe(rank=16, learning_rate=5e-4, guidance=4.0),
        comfyui=_FLUX2_KLEIN_COMFYUI,
        flavours={
            "klein-9b": dict(comfyui=replace(_FLUX2_KLEIN_COMFYUI, text_encoder_files=("qwen_3_8b.safetensors",))),
            "dev": dict(
                pipeline_class="Flux2Pipeline",
                pipeline_classes=("Flux2KleinPipeline",),
                # SimpleTuner trains FLUX.2 at guidance 1 whatever it is told (flux2/model.py:1303-1304): sampled so.
                recipe=Recipe(rank=16, learning_rate=5e-4, train_guidance=1.0, guidance=1.0),
                comfyui=ComfyUISetup(
                    model_loader="UNETLoader",
                    model_file="flux2_dev_fp8mixed.safetensors",
                    text_encoder_loader="CLIPLoader",
                    text_encoder_files=("mistral_3_small_flux2_bf16.safetensors",),
                    clip_type="flux2",
                    vae_file="flux2-vae.safetensors",
                    guidance="flux_guidance",
                    lora_modules=_FLUX2_LORA_MODULES,
                    empty_latent_node="EmptyFlux2LatentImage",
                ),
            ),
        },
    ),
}

DEFAULT_MODEL = "black-forest-labs/FLUX.1-dev"

# diffusers pipeline class (model_index.json "_class_name") -> family
_PIPELINE_TO_FAMILY = {cls: f.name for f in FAMILIES.values() for cls in f.all_pipeline_classes}


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        known = ", ".join(FAMILIES)
        raise GlanceError(f"unknown model family {name!r}; known families: {known}") from None


def guidance_kwargs(
    recipe: Recipe, *, guidance: float | None = None, true_cfg: float | None = None, negative_prompt: str | None = None
) -> dict:
    """guidance_scale / true_cfg_scale / negative_prompt for a pipeline call: what is given, else the recipe's.

    FLUX reads guidance_scale as its guidance embedding, SD3, Chroma and Z-Image as a CFG scale. Qwen-Image has no
    guidance input and samples with true CFG against a negative prompt instead, so there
    guidance_scale is only passed when asked for. `glance infer` samples with these, and the model
    card's snippet writes them out.
    """
    true_cfg = true_cfg if true_cfg is not None else recipe.true_cfg
    negative_prompt = negative_prompt if negative_prompt is not None else recipe.negative_prompt
    kwargs: dict = {}
    if true_cfg is None or guidance is not None:
        kwargs["guidance_scale"] = guidance if guidance is not None else recipe.guidance
    if true_cfg is not None:
        kwargs["true_cfg_scale"] = true_cfg
    if negative_prompt is not None:
        kwargs["negative_prompt"] = negative_prompt
    return kwargs


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


def resolve_family(model: str, family: str | None) -> Family:
    """The family of `model`: as given, else from a local model_index.json, else from known hub ids."""
    detected = None
    if not is_local_model(model) and not is_hub_id(model):
        raise model_not_found(model)  # a folder that is not there: say so, whatever --family says
    if is_local_model(model):
        index = Path(model).expanduser() / "model_index.json"
        if index.is_file():
            detected = _PIPELINE_TO_FAMILY.get(read_json(index).get("_class_name"))
    else:
        for known in FAMILIES.values():
            if model in known.refused_hub_ids:
                raise GlanceError(f"{model}: {known.refused_hub_ids[model]}")
        detected = next((f.name for f in FAMILIES.values() if model in f.hub_ids), None)
    if family is not None:
        chosen = get_family(family)
        if detected is not None and detected != chosen.name:
            raise GlanceError(f"--family {chosen.name} does not match {model}, which is a {detected} model")
        return chosen.for_model(model)
    if detected is None:
        known = ", ".join(FAMILIES)
        raise GlanceError(f"cannot tell the model family of {model!r}; pass --family ({known})")
    return FAMILIES[detected].for_model(model)


@dataclass(frozen=True)
class ModelSchedule:
    """What the 50-step default schedule of a model depends on."""

    scheduler: SchedulerSettings
    vae_scale_factor: int


def model_schedule(model: str, family: Family) -> ModelSchedule:
    """The scheduler settings and VAE downscale of `model`.

    A local diffusers folder is read (its scheduler config and VAE config); a hub model uses the
    settings shipped here, so nothing is downloaded.
    """
    if not is_local_model(model):
        return ModelSchedule(family.scheduler, vae_scale_factor=8)
    root = Path(model).expanduser()
    sched_path = root / "scheduler" / "scheduler_config.json"
    scheduler = SchedulerSettings.from_config(read_json(sched_path)) if sched_path.is_file() else family.scheduler
    vae_path = root / "vae" / "config.json"
    vae_scale = 8
    if vae_path.is_file():
        vae = read_json(vae_path)
        # The same rules the pipelines use to derive their vae_scale_factor.
        if "temperal_downsample" in vae:  # AutoencoderKLQwenImage
            vae_scale = 2 ** len(vae["temperal_downsample"])
        elif "block_out_channels" in vae:  # AutoencoderKL
            vae_scale = 2 ** (len(vae["block_out_channels"]) - 1)
    return ModelSchedule(scheduler, vae_scale)
