"""Per-family facts: the one place where FLUX, SD3, Qwen-Image, Chroma, Z-Image and FLUX.2 differ.

Adding a model family means adding one `Family` here (and its tiny test model, glance/tiny/<family>.py);
a family whose flavours differ gets its own class beside it (glance/family_flux2.py). The types are in
glance/family.py and are importable from here, as everything in glance imports them.
Nothing in this module imports torch or diffusers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from glance.family import (
    ComfyUISetup,
    Family,
    GlanceError,
    Recipe,
    SchedulerSettings,
    is_hub_id,
    is_local_model,
    model_not_found,
    read_json,
)
from glance.family_flux2 import (
    FLUX2_DEV_TEXT_ENCODER_REPO,
    FLUX2_DISTILLED,
    FLUX2_HUB_FLAVOURS,
    FLUX2_KLEIN_COMFYUI,
    FLUX2_LORA_MODULES,
    Flux2Family,
)

__all__ = [  # the types re-exported from glance/family.py, with this module's own names
    "DEFAULT_MODEL",
    "FAMILIES",
    "FLUX2_DEV_TEXT_ENCODER_REPO",
    "ComfyUISetup",
    "Family",
    "Flux2Family",
    "GlanceError",
    "ModelSchedule",
    "Recipe",
    "SchedulerSettings",
    "get_family",
    "guidance_kwargs",
    "is_hub_id",
    "is_local_model",
    "model_not_found",
    "model_schedule",
    "read_json",
    "resolve_family",
]


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


# FLUX.1-dev's scheduler config; Chroma's pipeline seeds its sigmas alike, and SimpleTuner's copy of FLUX.2's
# holds the same numbers (FLUX.2 takes its mu from compute_empirical_mu, not from these bounds).
_FLUX_SCHEDULER = SchedulerSettings(
    shift=3.0,
    use_dynamic_shifting=True,
    base_shift=0.5,
    max_shift=1.15,
    base_image_seq_len=256,
    max_image_seq_len=4096,
)


FAMILIES: dict[str, Family] = {
    "flux": Family(
        name="flux",
        pipeline_class="FluxPipeline",
        hub_ids=("black-forest-labs/FLUX.1-dev",),
        scheduler=_FLUX_SCHEDULER,
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
        scheduler=_FLUX_SCHEDULER,
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
        hub_ids=tuple(FLUX2_HUB_FLAVOURS),
        refused_hub_ids=FLUX2_DISTILLED,
        # SimpleTuner's copy of the hub config (flux2/model.py SCHEDULER_CONFIG); with empirical mu only the
        # exponential time shift is used: the pipelines pass mu = compute_empirical_mu(tokens, steps).
        scheduler=_FLUX_SCHEDULER,
        default_sigmas="empirical_mu",
        # FLUX's paper recipe (rank 16, 5e-4); [klein] base is sampled with true CFG 4 (its pipeline's default).
        recipe=Recipe(rank=16, learning_rate=5e-4, guidance=4.0),
        comfyui=FLUX2_KLEIN_COMFYUI,
        flavours={
            "klein-9b": dict(comfyui=replace(FLUX2_KLEIN_COMFYUI, text_encoder_files=("qwen_3_8b.safetensors",))),
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
                    lora_modules=FLUX2_LORA_MODULES,
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
