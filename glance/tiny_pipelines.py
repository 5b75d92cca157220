"""The tiny pipelines of each family: FLUX, SD3 and Qwen-Image, randomly initialised and built offline.

The configs follow the tiny ones diffusers' own pipeline tests use; the text side is
glance/tiny_text.py's. The scheduler of each model carries its family's real settings (shift,
dynamic shifting, terminal stretch), so schedules computed on a tiny model are the real model's.
FLUX also comes at the "bench" and "full" scales (glance/tiny.py says what each is for).

Heavy imports (torch, diffusers, transformers) happen inside the functions.
"""

from __future__ import annotations

from dataclasses import asdict

from glance.families import get_family
from glance.tiny_text import (
    QWEN_SPECIAL_TOKENS,
    clip_config,
    clip_tokenizer,
    qwen_tokenizer,
    seeded,
    t5_encoder,
    t5_tokenizer,
)


def family_scheduler(family: str):
    """The flow-matching scheduler with `family`'s real settings."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, **asdict(get_family(family).scheduler))


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


def flux_pipeline(seed: int, scale: str):
    from diffusers import AutoencoderKL, FluxPipeline
    from transformers import CLIPTextModel

    if scale == "tiny":
        # One block: no downsampling, one latent channel (diffusers' test VAE).
        vae_config = dict(block_out_channels=(4,), latent_channels=1, norm_num_groups=1)
    else:
        # Four blocks: 8x downsampling and 16 latent channels like FLUX's VAE, with few features.
        vae_config = dict(block_out_channels=(16, 16, 32, 32), latent_channels=16, norm_num_groups=8)
    vae = seeded(
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


def qwen_image_pipeline(seed: int, scale: str):
    from diffusers import AutoencoderKLQwenImage, QwenImagePipeline, QwenImageTransformer2DModel
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    z_dim = 4
    vae = seeded(
        seed,
        lambda: AutoencoderKLQwenImage(
            base_dim=z_dim * 2,
            z_dim=z_dim,
            dim_mult=[1, 2, 4],
            num_res_blocks=1,
            temperal_downsample=[False, True],
            latents_mean=[0.0] * z_dim,
            latents_std=[1.0] * z_dim,
        ),
    )
    transformer = seeded(
        seed,
        lambda: QwenImageTransformer2DModel(
            patch_size=2,
            in_channels=4 * z_dim,  # the pipeline packs 2x2 latent pixels per token
            out_channels=z_dim,
            num_layers=2,
            attention_head_dim=16,
            num_attention_heads=3,
            joint_attention_dim=16,  # the text encoder's hidden size
            guidance_embeds=False,
            axes_dims_rope=(8, 4, 4),
        ),
    )
    tokenizer = qwen_tokenizer()
    special = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIAL_TOKENS}
    config = Qwen2_5_VLConfig(
        text_config={
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
            "rope_theta": 1000000.0,
            "vocab_size": len(tokenizer),
            "bos_token_id": special["<|endoftext|>"],
            "eos_token_id": special["<|im_end|>"],
            "pad_token_id": special["<|endoftext|>"],
        },
        vision_config={"depth": 2, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 16},
        hidden_size=16,
        vocab_size=len(tokenizer),
        bos_token_id=special["<|endoftext|>"],
        eos_token_id=special["<|im_end|>"],
        pad_token_id=special["<|endoftext|>"],
    )
    return QwenImagePipeline(
        scheduler=family_scheduler("qwen_image"),
        vae=vae,
        text_encoder=seeded(seed, lambda: Qwen2_5_VLForConditionalGeneration(config)),
        tokenizer=tokenizer,
        transformer=transformer,
    )
