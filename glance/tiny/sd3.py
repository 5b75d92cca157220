"""The tiny SD3 pipeline: three text encoders (two CLIPs with projection, T5), a 4-channel VAE.

Heavy imports (torch, diffusers, transformers) happen inside the functions.
"""

from __future__ import annotations

from glance.tiny.common import family_scheduler, seeded
from glance.tiny.text import clip_config, clip_tokenizer, t5_encoder, t5_tokenizer


def sd3_pipeline(seed: int, scale: str):
    from diffusers import AutoencoderKL, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    vae = seeded(
        seed,
        lambda: AutoencoderKL(
            sample_size=32,
            in_channels=3,
            out_channels=3,
            block_out_channels=(4,),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=1,
            use_quant_conv=False,
            use_post_quant_conv=False,
            shift_factor=0.0609,
            scaling_factor=1.5035,
        ),
    )
    transformer = seeded(
        seed,
        lambda: SD3Transformer2DModel(
            sample_size=32,
            patch_size=1,
            in_channels=4,
            num_layers=1,
            attention_head_dim=8,
            num_attention_heads=4,
            caption_projection_dim=32,
            joint_attention_dim=32,
            pooled_projection_dim=64,  # two CLIP projections of 32
            out_channels=4,
            pos_embed_max_size=128,  # the VAE does not downsample: room for 128 px images
        ),
    )
    tokenizer = clip_tokenizer()
    tokenizer_3 = t5_tokenizer()
    return StableDiffusion3Pipeline(
        scheduler=family_scheduler("sd3"),
        vae=vae,
        text_encoder=seeded(seed, lambda: CLIPTextModelWithProjection(clip_config(tokenizer))),
        tokenizer=tokenizer,
        text_encoder_2=seeded(seed + 1, lambda: CLIPTextModelWithProjection(clip_config(tokenizer))),
        tokenizer_2=clip_tokenizer(),
        text_encoder_3=t5_encoder(tokenizer_3, seed),
        tokenizer_3=tokenizer_3,
        transformer=transformer,
    )
