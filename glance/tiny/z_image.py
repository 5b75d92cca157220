"""The tiny Z-Image pipeline: FLUX's tiny VAE, a tiny Qwen3 causal LM with Qwen3's chat template, and a
ZImageTransformer2DModel (diffusers' test sizes).

ZImagePipeline and SimpleTuner both format the prompt with the tokenizer's chat template
(`enable_thinking=True`) and take the text encoder's second-to-last hidden states.

Heavy imports (torch, diffusers, transformers) happen inside the functions.
"""

from __future__ import annotations

from glance.tiny.common import family_scheduler, seeded
from glance.tiny.flux import flux_vae
from glance.tiny.text import QWEN_SPECIAL_TOKENS, qwen_tokenizer

# Qwen3's chat template, cut to what a one-turn text prompt uses: with thinking enabled the
# assistant turn is opened and left empty, as the real template does.
QWEN3_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)
TEXT_WIDTH = 16


def z_image_pipeline(seed: int, scale: str):
    import torch
    from diffusers import ZImagePipeline, ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3ForCausalLM

    vae = flux_vae(seed, scale)

    def make_transformer():
        transformer = ZImageTransformer2DModel(
            all_patch_size=(2,),
            all_f_patch_size=(1,),
            in_channels=vae.config.latent_channels,
            dim=32,
            n_layers=2,
            n_refiner_layers=1,
            n_heads=2,
            n_kv_heads=2,
            qk_norm=True,
            cap_feat_dim=TEXT_WIDTH,
            axes_dims=[8, 4, 4],
            axes_lens=[1024, 64, 64],  # caption positions, then up to 128 px (64 patches) per side
        )
        with torch.no_grad():  # made with torch.empty: give them values, as diffusers' tests do
            transformer.x_pad_token.copy_(torch.ones_like(transformer.x_pad_token))
            transformer.cap_pad_token.copy_(torch.ones_like(transformer.cap_pad_token))
        return transformer

    tokenizer = qwen_tokenizer()
    tokenizer.chat_template = QWEN3_CHAT_TEMPLATE
    special = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIAL_TOKENS}
    config = Qwen3Config(
        hidden_size=TEXT_WIDTH,
        intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=8,
        vocab_size=len(tokenizer),
        max_position_embeddings=1024,
        bos_token_id=special["<|endoftext|>"],
        eos_token_id=special["<|im_end|>"],
        pad_token_id=special["<|endoftext|>"],
        tie_word_embeddings=True,
    )
    return ZImagePipeline(
        scheduler=family_scheduler("z_image"),
        vae=vae,
        text_encoder=seeded(seed, lambda: Qwen3ForCausalLM(config)),
        tokenizer=tokenizer,
        transformer=seeded(seed, make_transformer),
    )
