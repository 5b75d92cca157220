"""The tiny models' text side: tokenizers learnt offline from a few sentences, and tiny text encoders.

Each tokenizer is trained here (with the `tokenizers` library) in the form its family's pipeline
loads, instead of being downloaded: CLIP's byte-level BPE, T5's Unigram, Qwen2's byte-level BPE.
The text encoders follow the tiny configs diffusers' own pipeline tests use. glance/tiny_pipelines.py
puts them into pipelines; benchmarks/pretrain_shapes.py trains on them.

Heavy imports (torch, transformers, tokenizers) happen inside the functions.
"""

from __future__ import annotations

import json

# What the tiny tokenizers learn their merges from. Qwen-Image's prompt template words are here so
# the template prefix tokenizes to the 34 tokens QwenImagePipeline drops, as with the real tokenizer.
CORPUS = (
    "a photo of a cat sitting on a red sofa",
    "a red circle and a blue square on a warm gradient",
    "a watercolor painting of a lighthouse at sunset, high quality, detailed",
    "portrait of an old man with a beard, studio lighting, 85mm",
    "Describe the image by detailing the color, shape, size, texture, quantity, text, "
    "spatial relationships of the objects and background:",
    "system\n",
    "user\n",
    "assistant\n",
)
QWEN_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def seeded(seed: int, make):
    """`make()` right after seeding torch with `seed`: the same seed makes the same weights."""
    import torch

    torch.manual_seed(seed)
    return make()


# Tokenizers


def train_bpe(
    pre_tokenizer, special_tokens: tuple[str, ...], vocab_size: int, end_of_word_suffix: str = "", corpus=CORPUS
):
    """A byte-level BPE trained on the corpus: (vocab, merges) in the form transformers' tokenizers take."""
    import string

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(end_of_word_suffix=end_of_word_suffix))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix=end_of_word_suffix,
        show_progress=False,
    )
    # Every printable character as a word of its own, so each one (with its end-of-word form) is known.
    tokenizer.train_from_iterator(list(corpus) + list(string.printable), trainer=trainer)
    model = json.loads(tokenizer.to_str())["model"]
    return model["vocab"], [tuple(merge) for merge in model["merges"]]


def clip_tokenizer(corpus=CORPUS):
    from tokenizers import Regex, pre_tokenizers
    from transformers import CLIPTokenizer

    # CLIPTokenizer's own pre-tokenization, so the merges fit the way it splits text.
    split = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
    pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(split), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    vocab, merges = train_bpe(
        pre_tokenizer, ("<|startoftext|>", "<|endoftext|>"), 1000, end_of_word_suffix="</w>", corpus=corpus
    )
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def t5_tokenizer(corpus=CORPUS):
    import string

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import T5TokenizerFast

    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    trainer = trainers.UnigramTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "</s>", "<unk>"],  # T5's ids 0, 1, 2
        unk_token="<unk>",
        initial_alphabet=list(string.printable.strip()),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    vocab = [tuple(piece) for piece in json.loads(tokenizer.to_str())["model"]["vocab"]]
    # FLUX and SD3 pad T5 prompts to 512 (SimpleTuner forces it for FLUX); T5's relative attention takes any length.
    return T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=512)


def qwen_tokenizer():
    from tokenizers import Regex, pre_tokenizers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    vocab, merges = train_bpe(pre_tokenizer, QWEN_SPECIAL_TOKENS, 600)
    return Qwen2Tokenizer(vocab=vocab, merges=merges, extra_special_tokens=list(QWEN_SPECIAL_TOKENS[1:]))


# Text encoders


def clip_config(tokenizer):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        hidden_act="gelu",
        projection_dim=32,
        vocab_size=len(tokenizer),
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def t5_encoder(tokenizer, seed: int):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    return seeded(seed, lambda: T5EncoderModel(config))
