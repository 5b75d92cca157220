"""The tiny models' text side: tokenizers made offline from a few sentences, and tiny text encoders.

Each tokenizer is made here in the form its family's pipeline loads, instead of being downloaded:
CLIP's and Qwen2's byte-level BPE (merges learnt from the corpus), T5's Unigram (the corpus's words).
The same corpus makes the same tokenizer in every process, so a tiny model's images can be pinned.
The text encoders follow the tiny configs diffusers' own pipeline tests use. glance/tiny/<family>.py
puts them into pipelines; benchmarks/pretrain_shapes.py trains on them.

Heavy imports (torch, transformers, tokenizers) happen inside the functions.
"""

from __future__ import annotations

# What the tiny tokenizers are made from. Qwen-Image's prompt template words are here so
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
    """A byte-level BPE learnt from the corpus: (vocab, merges) in the form transformers' tokenizers take.

    Learnt here, not by the `tokenizers` library's BpeTrainer: that one breaks ties between equally
    frequent pairs by a per-process hash, so every process got other merges and token ids. Here the
    most frequent pair wins and ties go to the first in sorted order: the same corpus, the same
    tokenizer, in every process.
    """
    import string
    from collections import Counter

    from tokenizers import normalizers, pre_tokenizers

    normalizer = normalizers.NFC()
    words: Counter[tuple[str, ...]] = Counter()
    # Every printable character as a word of its own, so each one (with its end-of-word form) is known.
    for text in (*corpus, *string.printable):
        for piece, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)):
            symbols = list(piece)
            symbols[-1] += end_of_word_suffix
            words[tuple(symbols)] += 1
    alphabet = set(pre_tokenizers.ByteLevel.alphabet()) | {symbol for word in words for symbol in word}
    tokens = [*special_tokens, *sorted(alphabet - set(special_tokens))]
    merges: list[tuple[str, str]] = []
    while len(tokens) < vocab_size:
        pairs: Counter[tuple[str, str]] = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:], strict=False):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        if best[0] + best[1] not in tokens:
            tokens.append(best[0] + best[1])
        words = Counter({_merge(word, best): count for word, count in words.items()})
    return {token: index for index, token in enumerate(tokens)}, merges


def _merge(word: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    merged, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            merged.append(word[i] + word[i + 1])
            i += 2
        else:
            merged.append(word[i])
            i += 1
    return tuple(merged)


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
    """A T5 Unigram tokenizer whose pieces are the corpus's words, then single characters.

    Written out, not learnt: the `tokenizers` library's UnigramTrainer gave other pieces in every
    process, and its pieces for short texts were letters (a bag of letters would not tell red from green).
    """
    import string

    from transformers import T5TokenizerFast

    words = sorted({word.strip(",") for text in corpus for word in text.split()} - {""})
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), (",", -1.0), ("\u2581", -4.0)]  # T5's ids 0, 1, 2
    vocab += [("\u2581" + word, -1.0) for word in words]
    vocab += [(char, -10.0) for char in string.printable.strip() if char != ","]
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
