"""FLUX.2: the family whose SimpleTuner code path, text encoder and guidance depend on its flavour.

klein-4b / klein-9b / dev are read from the model itself (glance/families.py lists the family).
Nothing here imports torch or diffusers.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from glance.family import ComfyUISetup, Family, GlanceError, is_local_model, read_json

# FLUX.2 [klein] base and [dev]: ComfyUI's core Flux2 model (comfy/model_base.py, class Flux2(Flux)); the file names
# are those of the Comfy-Org/flux2-klein and Comfy-Org/flux2-dev repackaged models. Flux2 takes Flux's LoRA key map,
# comfy/utils.py flux_to_diffusers: the single blocks' fused attn.to_qkv_mlp_proj and attn.to_out go whole to
# linear1 and linear2 ("# Flux 2"; diffusers' converter renames linear1 without reordering), the double blocks'
# ff(_context).linear_in/out to img_mlp / txt_mlp (read at ComfyUI 4f874c5, 2026-07-29).
FLUX2_LORA_MODULES = (
    r"transformer_blocks\.\d+\.(attn\.(to_[qkv]|add_[qkv]_proj|to_out\.0|to_add_out)|ff(_context)?\.linear_(in|out))",
    r"single_transformer_blocks\.\d+\.attn\.(to_qkv_mlp_proj|to_out)",
)
FLUX2_DEV_TEXT_ENCODER_REPO = "mistralai/Mistral-Small-3.1-24B-Instruct-2503"  # SimpleTuner's MISTRAL_PATH
FLUX2_KLEIN_COMFYUI = ComfyUISetup(
    model_loader="UNETLoader",
    model_file="flux-2-klein-base-4b.safetensors",
    model_files={"black-forest-labs/FLUX.2-klein-base-9B": "flux-2-klein-base-9b.safetensors"},
    text_encoder_loader="CLIPLoader",
    text_encoder_files=("qwen_3_4b.safetensors",),  # klein 9B: qwen_3_8b (Family.flavours)
    clip_type="flux2",
    vae_file="flux2-vae.safetensors",
    guidance="cfg",
    lora_modules=FLUX2_LORA_MODULES,
    empty_latent_node="EmptyFlux2LatentImage",
)
FLUX2_HUB_FLAVOURS = {
    "black-forest-labs/FLUX.2-klein-base-4B": "klein-4b",
    "black-forest-labs/FLUX.2-klein-base-9B": "klein-9b",
    "black-forest-labs/FLUX.2-dev": "dev",
}
# BFL's step-distilled [klein] (4 steps, no CFG): other weights than the base models a fine-tune starts from.
FLUX2_DISTILLED = {
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
            if model in FLUX2_HUB_FLAVOURS:
                return FLUX2_HUB_FLAVOURS[model]
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
