"""The tiny Chroma pipeline: FLUX's tiny VAE and T5, and a ChromaTransformer2DModel (diffusers' test sizes).

Heavy imports (torch, diffusers, transformers) happen inside the functions.
"""

from __future__ import annotations

from glance.tiny.common import family_scheduler, seeded
from glance.tiny.flux import flux_vae
from glance.tiny.text import t5_encoder, t5_tokenizer


def chroma_pipeline(seed: int, scale: str):
    from diffusers import ChromaPipeline, ChromaTransformer2DModel

    vae = flux_vae(seed, scale)
    transformer = seeded(
        seed,
        lambda: ChromaTransformer2DModel(
            patch_size=1,
            in_channels=4 * vae.config.latent_channels,  # the pipeline packs 2x2 latent pixels per token
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,  # T5 d_model
            axes_dims_rope=(4, 4, 8),
            approximator_num_channels=16,
            approximator_hidden_dim=32,
            approximator_layers=1,
        ),
    )
    tokenizer = t5_tokenizer()
    return ChromaPipeline(
        scheduler=family_scheduler("chroma"),
        vae=vae,
        text_encoder=t5_encoder(tokenizer, seed),
        tokenizer=tokenizer,
        transformer=transformer,
        image_encoder=None,
        feature_extractor=None,
    )
