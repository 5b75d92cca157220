"""Tiny, randomly initialised diffusers pipelines that build entirely offline.

One implementation for the demo, the tests and the benchmarks. The configs follow the tiny ones
diffusers' own pipeline tests use; the tokenizers are trained here on a few sentences instead of
being downloaded. The scheduler of each model carries its family's real settings (shift, dynamic
shifting, terminal stretch), so schedules computed on a tiny model are the real model's schedules.

Scales:
  "tiny"   a few hundred kB; samples in well under a second on CPU (all families).
  "bench"  FLUX only: the tiny text encoders, a VAE that downsamples 8x with 16 latent channels like
           the real one (1024 px -> 4096 tokens), and a transformer of 576M parameters saved in
           bfloat16 (1.15 GB), so sampling time is the transformer's, as with the real model.
           Builds in ~20 s on 2 CPU cores, peaking near 3.5 GB of RAM.
  "full"   FLUX only: the bench model with a FLUX.1-dev-sized transformer (19 + 38 blocks of width 3072,
           11.89 B parameters, 24 GB in bfloat16) for GPU memory checks. Built directly in bfloat16 on
           the GPU when there is one (seconds, plus writing 24 GB); on a CPU it needs ~30 GB of RAM.

Heavy imports (torch, diffusers, transformers, tokenizers) happen inside the functions.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict
from io import BytesIO
from pathlib import Path

from glance import __version__
from glance.families import GlanceError, get_family
from glance.files import needs_writing, write_atomic

SCALES = ("tiny", "bench", "full")
STAMP_NAME = "glance-tiny.json"  # written last: a folder without it is not a finished build

# What the tiny tokenizers learn their merges from. Qwen-Image's prompt template words are here so
# the template prefix tokenizes to the 34 tokens QwenImagePipeline drops, as with the real tokenizer.
_CORPUS = (
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
_QWEN_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def build_tiny_model(family: str, path: Path, *, seed: int = 0, scale: str = "tiny") -> Path:
    """Build a complete diffusers pipeline folder for `family` ("flux", "sd3", "qwen_image") at `path`.

    Returns at once when `path` already holds a finished build with the same arguments. The build
    happens in a temporary folder beside `path` that is renamed into place when complete, so an
    interrupted build is never mistaken for a finished one.
    """
    name = get_family(family).name
    if scale not in SCALES:
        raise GlanceError(f"unknown tiny model scale {scale!r}; known scales: {', '.join(SCALES)}")
    if scale != "tiny" and name != "flux":
        raise GlanceError(f"the {scale} scale is built for the flux family only")
    path = Path(path)
    stamp = {"family": name, "seed": seed, "scale": scale, "glance_version": __version__}
    existing = _read_stamp(path)
    if existing == stamp:
        return path
    if existing is None and path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise GlanceError(f"{path} exists and is not a tiny model built by glance; choose another folder")

    path.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.building."))
    try:
        pipeline = _build_pipeline(name, seed, scale)
        pipeline.save_pretrained(building, safe_serialization=True)
        (building / STAMP_NAME).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
        _replace_folder(building, path)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return path


def write_sample_pair(folder: Path, size: int = 128) -> Path:
    """Write a synthetic training pair, `glance.png` and its caption `glance.txt`; return the image path.

    The image is deterministic and has structure a LoRA can learn (a gradient, a disc, a square).
    """
    from PIL import Image, ImageDraw

    folder = Path(folder)
    image = Image.new("RGB", (size, size))
    pixels = image.load()
    for y in range(size):
        for x in range(size):
            pixels[x, y] = (200 + 55 * x // size, 120 + 80 * y // size, 60 + 40 * (x + y) // (2 * size))
    draw = ImageDraw.Draw(image)
    draw.ellipse((size // 8, size // 8, size // 2, size // 2), fill=(210, 30, 40))
    draw.rectangle((size // 2, size // 2, size - size // 8, size - size // 8), fill=(30, 60, 200))

    buffer = BytesIO()
    image.save(buffer, format="PNG")
    image_path = folder / "glance.png"
    caption_path = folder / "glance.txt"
    caption = "a red circle and a blue square on a warm gradient\n"
    for target, payload in ((image_path, buffer.getvalue()), (caption_path, caption)):
        if needs_writing(target, payload, force=False):
            write_atomic(target, payload)
    return image_path


LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # the attention projections, in every family


def write_random_lora(
    folder: Path, transformer, family: str, *, seed: int, rank: int = 4, with_metadata: bool = True
) -> Path:
    """Give `transformer` a LoRA with random non-zero weights and save it the way SimpleTuner does.

    Keys are `transformer.<module>.lora_A.weight` / `lora_B.weight`, alpha is 4 x rank (as glance
    trains), saved through the pipeline's `save_lora_weights`; `with_metadata=False` leaves out the
    adapter config, as SimpleTuner 4.10.1's final save does. The same seed gives the same LoRA.
    """
    import diffusers
    import torch
    from diffusers.training_utils import _collate_lora_metadata
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    config = LoraConfig(r=rank, lora_alpha=4 * rank, init_lora_weights="gaussian", target_modules=list(LORA_TARGETS))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer.add_adapter(config)
        for name, parameter in transformer.named_parameters():
            if ".lora_B." in name:  # peft starts lora_B at zero: a LoRA without effect
                torch.nn.init.normal_(parameter, std=0.5)
    pipeline_class = getattr(diffusers, get_family(family).pipeline_class)
    metadata = _collate_lora_metadata({"transformer": transformer}) if with_metadata else {}
    pipeline_class.save_lora_weights(
        folder, transformer_lora_layers=get_peft_model_state_dict(transformer), safe_serialization=True, **metadata
    )
    return Path(folder)


def load_transformer(model: Path):
    from diffusers import AutoModel

    return AutoModel.from_pretrained(str(model), subfolder="transformer", use_safetensors=True)


def _read_stamp(path: Path) -> dict | None:
    try:
        return json.loads((path / STAMP_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _replace_folder(built: Path, path: Path) -> None:
    """Rename `built` to `path`; an older build (or an empty folder) at `path` is removed first."""
    if not path.exists():
        os.replace(built, path)
        return
    retired = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old."))
    os.replace(path, retired / "model")
    os.replace(built, path)
    shutil.rmtree(retired, ignore_errors=True)


def _build_pipeline(family: str, seed: int, scale: str):
    import torch

    builders = {"flux": _flux_pipeline, "sd3": _sd3_pipeline, "qwen_image": _qwen_image_pipeline}
    # Seed every component the same way diffusers' tests do, without disturbing the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        return builders[family](seed, scale)


def _scheduler(family: str):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, **asdict(get_family(family).scheduler))


def _seeded(seed: int, make):
    import torch

    torch.manual_seed(seed)
    return make()


# Tokenizers


def _train_bpe(
    pre_tokenizer, special_tokens: tuple[str, ...], vocab_size: int, end_of_word_suffix: str = "", corpus=_CORPUS
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


def _clip_tokenizer(corpus=_CORPUS):
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
    vocab, merges = _train_bpe(
        pre_tokenizer, ("<|startoftext|>", "<|endoftext|>"), 1000, end_of_word_suffix="</w>", corpus=corpus
    )
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def _t5_tokenizer(corpus=_CORPUS):
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


def _qwen_tokenizer():
    from tokenizers import Regex, pre_tokenizers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    vocab, merges = _train_bpe(pre_tokenizer, _QWEN_SPECIAL_TOKENS, 600)
    return Qwen2Tokenizer(vocab=vocab, merges=merges, extra_special_tokens=list(_QWEN_SPECIAL_TOKENS[1:]))


# Text encoders


def _clip_config(tokenizer):
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


def _t5_encoder(tokenizer, seed: int):
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
    return _seeded(seed, lambda: T5EncoderModel(config))


# Pipelines


# FLUX transformer sizes. bench: 2 + 4 blocks of width 2048 (FLUX.1-dev: 19 + 38 of width 3072).
_FLUX_SCALES = {
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


def _flux_transformer(seed: int, scale: str):
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
            **_FLUX_SCALES[scale],
        )

    if scale != "full":
        transformer = _seeded(seed, make)
        # FLUX.1-dev ships its transformer in bfloat16
        return transformer.to(torch.bfloat16) if scale == "bench" else transformer
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # 11.9 B parameters: never materialise them in float32
    try:
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            return _seeded(seed, make)
    finally:
        torch.set_default_dtype(default_dtype)


def _flux_pipeline(seed: int, scale: str):
    from diffusers import AutoencoderKL, FluxPipeline
    from transformers import CLIPTextModel

    if scale == "tiny":
        # One block: no downsampling, one latent channel (diffusers' test VAE).
        vae_config = dict(block_out_channels=(4,), latent_channels=1, norm_num_groups=1)
    else:
        # Four blocks: 8x downsampling and 16 latent channels like FLUX's VAE, with few features.
        vae_config = dict(block_out_channels=(16, 16, 32, 32), latent_channels=16, norm_num_groups=8)
    vae = _seeded(
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
    transformer = _flux_transformer(seed, scale)

    tokenizer = _clip_tokenizer()
    tokenizer_2 = _t5_tokenizer()
    return FluxPipeline(
        scheduler=_scheduler("flux"),
        vae=vae,
        text_encoder=_seeded(seed, lambda: CLIPTextModel(_clip_config(tokenizer))),
        tokenizer=tokenizer,
        text_encoder_2=_t5_encoder(tokenizer_2, seed),
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )


def _sd3_pipeline(seed: int, scale: str):
    from diffusers import AutoencoderKL, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    vae = _seeded(
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
    transformer = _seeded(
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
    tokenizer = _clip_tokenizer()
    tokenizer_3 = _t5_tokenizer()
    return StableDiffusion3Pipeline(
        scheduler=_scheduler("sd3"),
        vae=vae,
        text_encoder=_seeded(seed, lambda: CLIPTextModelWithProjection(_clip_config(tokenizer))),
        tokenizer=tokenizer,
        text_encoder_2=_seeded(seed + 1, lambda: CLIPTextModelWithProjection(_clip_config(tokenizer))),
        tokenizer_2=_clip_tokenizer(),
        text_encoder_3=_t5_encoder(tokenizer_3, seed),
        tokenizer_3=tokenizer_3,
        transformer=transformer,
    )


def _qwen_image_pipeline(seed: int, scale: str):
    from diffusers import AutoencoderKLQwenImage, QwenImagePipeline, QwenImageTransformer2DModel
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    z_dim = 4
    vae = _seeded(
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
    transformer = _seeded(
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
    tokenizer = _qwen_tokenizer()
    special = {token: tokenizer.convert_tokens_to_ids(token) for token in _QWEN_SPECIAL_TOKENS}
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
        scheduler=_scheduler("qwen_image"),
        vae=vae,
        text_encoder=_seeded(seed, lambda: Qwen2_5_VLForConditionalGeneration(config)),
        tokenizer=tokenizer,
        transformer=transformer,
    )
