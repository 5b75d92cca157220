"""The tiny FLUX.2 [klein] pipeline: randomly initialised, built offline.

What SimpleTuner and diffusers need of it, and why each choice:
- the Qwen3 text encoder has 28 layers (at width 16), because both read the hidden states of
  layers 9, 18 and 27 (diffusers pipeline_flux2_klein.py, SimpleTuner flux2/model.py KLEIN_OUTPUT_LAYERS);
- its tokenizer is glance's offline Qwen2 BPE with a chat template that takes `enable_thinking`,
  as the pipeline formats every prompt through it;
- the VAE has 32 latent channels (SimpleTuner prepares 32-channel latents for FLUX.2) and two blocks,
  so it downsamples 2x: a 64 px image is 16x16 packed tokens (256), the 50-step schedule's mu is
  compute_empirical_mu(256, 50);
- the transformer has no guidance embedding, like the [klein] base models (true CFG instead).
The scheduler carries FLUX.2's real settings (glance.families). Heavy imports happen inside the functions.
"""

from __future__ import annotations

from glance.tiny.common import family_scheduler, seeded
from glance.tiny.text import QWEN_SPECIAL_TOKENS, qwen_tokenizer

KLEIN_TEXT_LAYERS = 28  # the encoder's hidden states 9, 18 and 27 must exist
TEXT_WIDTH = 16

# Qwen3's template, reduced to what the pipelines ask of it: the turns, the generation prompt, and an
# empty think block when thinking is off (as Qwen3's own template writes it).
QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)


def qwen3_tokenizer():
    tokenizer = qwen_tokenizer()
    tokenizer.chat_template = QWEN3_CHAT_TEMPLATE
    return tokenizer


def qwen3_encoder(tokenizer, seed: int):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    special = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIAL_TOKENS}
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_WIDTH,
        intermediate_size=TEXT_WIDTH,
        num_hidden_layers=KLEIN_TEXT_LAYERS,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=special["<|endoftext|>"],
        eos_token_id=special["<|im_end|>"],
        pad_token_id=special["<|endoftext|>"],
    )
    return seeded(seed, lambda: Qwen3ForCausalLM(config))


def flux2_vae(seed: int):
    from diffusers import AutoencoderKLFlux2

    return seeded(
        seed,
        lambda: AutoencoderKLFlux2(
            block_out_channels=(4, 4),
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            layers_per_block=1,
            latent_channels=32,
            norm_num_groups=1,
            sample_size=32,
            use_quant_conv=False,
            use_post_quant_conv=False,
        ),
    )


def flux2_transformer(seed: int, *, text_width: int, guidance_embeds: bool):
    from diffusers import Flux2Transformer2DModel

    return seeded(
        seed,
        lambda: Flux2Transformer2DModel(
            patch_size=1,
            in_channels=4 * 32,  # 2x2 packed latent pixels of 32 channels
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=3 * text_width,  # three hidden-state layers stacked
            timestep_guidance_channels=32,
            axes_dims_rope=(4, 4, 4, 4),
            guidance_embeds=guidance_embeds,
        ),
    )


def flux2_klein_pipeline(seed: int, scale: str):
    from diffusers import Flux2KleinPipeline

    tokenizer = qwen3_tokenizer()
    return Flux2KleinPipeline(
        scheduler=family_scheduler("flux2"),
        vae=flux2_vae(seed),
        text_encoder=qwen3_encoder(tokenizer, seed),
        tokenizer=tokenizer,
        transformer=flux2_transformer(seed, text_width=TEXT_WIDTH, guidance_embeds=False),
        is_distilled=False,
    )
