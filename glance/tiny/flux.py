"""The tiny FLUX.1 pipeline (the "tiny", "bench" and "full" scales; glance/tiny/__init__.py says what each is for).

The configs follow the tiny ones diffusers' own pipeline tests use; the text side is glance/tiny/text.py's.

Heavy imports (torch, diffusers, transformers) happen inside the functions.
"""

from __future__ import annotations

from glance.tiny.common import family_scheduler, seeded
from glance.tiny.text import clip_config, clip_tokenizer, t5_encoder, t5_tokenizer

# FLUX transformer sizes. bench: 2 + 4 blocks of width 2048 (FLUX.1-dev: 19 + 38 of width 3072).
FLUX_SCALES = {
    "tiny": dict(
        num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2, axes_dims_rope=[4, 4, 8]
    ),
    "bench": dict(
        num_layers=2, num_single_layers=4, attention_head_dim=128, num_attention_heads=16, axes_dims_rope=[16, 56, 56]
    ),
    "full": dict(  # FLUX.1-dev's transformer, with the narrow text projections of the tiny text encoders
        num_layers=19, num_single_layers=38, attention_head_dim=128, num_attention_heads=24, axes_dims_rope=[16, 56, 56]
    ),
}


def flux_transformer(seed: int, scale: str):
    """The FLUX transformer of `scale`; "full" is made in bfloat16, on the GPU when there is one."""
    import torch
    from diffusers import FluxTransformer2DModel

    latent_channels = 1 if scale == "tiny" else 16

    def make():
        return FluxTransformer2DModel(
            patch_size=1,
            in_channels=4 * latent_channels,  # the pipeline packs 2x2 latent pixels per token
            joint_attention_dim=32,  # T5 d_model
            pooled_projection_dim=32,  # CLIP hidden size
            guidance_embeds=True,  # like FLUX.1-dev: guidance is an input of the model
            **FLUX_SCALES[scale],
        )

    if scale != "full":
        transformer = seeded(seed, make)
        # FLUX.1-dev ships its transformer in bfloat16
        return transformer.to(torch.bfloat16) if scale == "bench" else transformer
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # 11.9 B parameters: never materialise them in float32
    try:
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            return seeded(seed, make)
    finally:
        torch.set_default_dtype(default_dtype)


def flux_vae(seed: int, scale: str):
    """FLUX's AutoencoderKL at `scale` (Chroma and Z-Image decode with FLUX's VAE too)."""
    from diffusers import AutoencoderKL

    if scale == "tiny":
        # One block: no downsampling, one latent channel (diffusers' test VAE).
        vae_config = dict(block_out_channels=(4,), latent_channels=1, norm_num_groups=1)
    else:
        # Four blocks: 8x downsampling and 16 latent channels like FLUX's VAE, with few features.
        vae_config = dict(block_out_channels=(16, 16, 32, 32), latent_channels=16, norm_num_groups=8)
    return seeded(
        seed,
        lambda: AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * len(vae_config["block_out_channels"]),
            up_block_types=("UpDecoderBlock2D",) * len(vae_config["block_out_channels"]),
            layers_per_block=1,
            use_quant_conv=False,
            use_post_quant_conv=False,
            shift_factor=0.0609,
            scaling_factor=1.5035,
            sample_size=32,
            **vae_config,
        ),
    )


def flux_pipeline(seed: int, scale: str):
    from diffusers import FluxPipeline
    from transformers import CLIPTextModel

    vae = flux_vae(seed, scale)
    transformer = flux_transformer(seed, scale)

    tokenizer = clip_tokenizer()
    tokenizer_2 = t5_tokenizer()
    return FluxPipeline(
        scheduler=family_scheduler("flux"),
        vae=vae,
        text_encoder=seeded(seed, lambda: CLIPTextModel(clip_config(tokenizer))),
        tokenizer=tokenizer,
        text_encoder_2=t5_encoder(tokenizer_2, seed),
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )
