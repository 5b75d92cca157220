"""The tiny FLUX.2 pipelines, [klein] base and [dev]: randomly initialised, built offline.

What SimpleTuner and diffusers need of it, and why each choice:
- the Qwen3 text encoder has 28 layers (at width 16), because both read the hidden states of
  layers 9, 18 and 27 (diffusers pipeline_flux2_klein.py, SimpleTuner flux2/model.py KLEIN_OUTPUT_LAYERS);
- its tokenizer is glance's offline Qwen2 BPE with a chat template that takes `enable_thinking`,
  as the pipeline formats every prompt through it;
- the VAE has 32 latent channels (SimpleTuner prepares 32-channel latents for FLUX.2) and two blocks,
  so it downsamples 2x: a 64 px image is 16x16 packed tokens (256), the 50-step schedule's mu is
  compute_empirical_mu(256, 50);
- the transformer has no guidance embedding, like the [klein] base models (true CFG instead).
[dev]: a Mistral3 text encoder of 31 layers (the pipeline reads hidden states 10, 20 and 30) with a one-layer
Pixtral vision tower, and a PixtralProcessor around a byte-level BPE with Mistral's control tokens and a
chat template of system + user turns; the transformer has FLUX.2 [dev]'s guidance embedding.
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


MISTRAL_SPECIAL_TOKENS = (
    "<unk>", "<s>", "</s>", "<pad>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
    "[IMG]", "[IMG_BREAK]", "[IMG_END]",
)  # fmt: skip
DEV_TEXT_LAYERS = 31  # hidden states 10, 20 and 30
# The turns Flux2Pipeline's format_input makes (system + user, each content a list of one text part).
MISTRAL_CHAT_TEMPLATE = (
    "{%- for message in messages %}{%- if message['role'] == 'system' %}"
    "[SYSTEM_PROMPT]{{ message['content'][0]['text'] }}[/SYSTEM_PROMPT]"
    "{%- else %}[INST]{{ message['content'][0]['text'] }}[/INST]{%- endif %}{%- endfor %}"
)


def pixtral_processor():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PixtralImageProcessor, PixtralProcessor, PreTrainedTokenizerFast
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    from glance.tiny.text import train_bpe

    pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    vocab, merges = train_bpe(pre_tokenizer, MISTRAL_SPECIAL_TOKENS, 600)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizer
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens=list(MISTRAL_SPECIAL_TOKENS[4:]),
        model_max_length=512,
    )
    return PixtralProcessor(
        image_processor=PixtralImageProcessor(),
        tokenizer=tokenizer,
        patch_size=16,
        spatial_merge_size=2,
        chat_template=MISTRAL_CHAT_TEMPLATE,
        image_token="[IMG]",
        image_break_token="[IMG_BREAK]",
        image_end_token="[IMG_END]",
    )


def mistral3_encoder(processor, seed: int):
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    tokenizer = processor.tokenizer
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in MISTRAL_SPECIAL_TOKENS}
    config = Mistral3Config(
        text_config=dict(
            model_type="mistral",
            vocab_size=len(tokenizer),
            hidden_size=TEXT_WIDTH,
            intermediate_size=TEXT_WIDTH,
            num_hidden_layers=DEV_TEXT_LAYERS,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=8,
            max_position_embeddings=1024,
            bos_token_id=ids["<s>"],
            eos_token_id=ids["</s>"],
            pad_token_id=ids["<pad>"],
        ),
        vision_config=dict(
            model_type="pixtral",
            hidden_size=16,
            intermediate_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            head_dim=8,
            image_size=64,
            patch_size=16,
        ),
        image_token_index=ids["[IMG]"],
        spatial_merge_size=2,
        multimodal_projector_bias=False,
    )
    return seeded(seed, lambda: Mistral3ForConditionalGeneration(config))


def flux2_dev_pipeline(seed: int, scale: str):
    from diffusers import Flux2Pipeline

    processor = pixtral_processor()
    return Flux2Pipeline(
        scheduler=family_scheduler("flux2"),
        vae=flux2_vae(seed),
        text_encoder=mistral3_encoder(processor, seed),
        tokenizer=processor,
        transformer=flux2_transformer(seed, text_width=TEXT_WIDTH, guidance_embeds=True),
    )
