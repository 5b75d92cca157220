"""Pretrain the small FLUX-architecture model that ships with glance (glance/models/shapes-flux).

    .venv/bin/python benchmarks/pretrain_shapes.py                    # VAE, then transformer, then save
    nohup .venv/bin/python benchmarks/pretrain_shapes.py > pretrain.log 2>&1 &   # the usual way: ~80 min
    .venv/bin/python benchmarks/pretrain_shapes.py --vae-steps 300 --steps 200 --out /tmp/m   # a smoke run

Deterministic (every seed fixed, every batch a function of its step) and resumable: a checkpoint
goes to --workdir every --checkpoint-every steps and a re-run continues from the latest one. The
tokenizers are the same in every process (glance.tiny.text). The shipped model predates that: its
CLIP tokenizer was learnt by the `tokenizers` library, whose ties between equal merges fell
differently in each of the two invocations it was made in (4,500 steps, then the second cycle
resumed), so this script makes a model of the same recipe, not the shipped bytes; the shipped
folder carries the tokenizer its transformer finished on.

Wall time on 2 CPU cores: about 80 minutes (VAE 12, transformer 4,500 steps in 41.5 and the
3,000-step second cycle in 25); the shipped model's stamp adds the two invocations it was made in.

The model is a diffusers FluxPipeline that glance trains and samples like FLUX.1-dev:
- VAE: AutoencoderKL, 4 blocks (8x down) and 16 latent channels like FLUX's, 0.7 M parameters;
  shift_factor / scaling_factor from the latent statistics of the trained encoder.
- Text encoders: glance.tiny.text's CLIP and T5 with tokenizers learnt on the shapes captions, random
  and frozen. The T5's attention output is zeroed, so it maps each token on its own: a caption
  is a bag of words (enough: colour, shape, place and background words are all distinct), and
  the 512 padding tokens FLUX pipelines (and SimpleTuner) use are identical vectors.
- Transformer: FluxTransformer2DModel, 2 double + 4 single blocks of width 192 (3 heads x 64),
  5.2 M parameters, guidance embedding trained on random guidance in [1, 5] so any guidance works.

Why the padding matters: the cost of a FLUX step is in its text tokens (512 padded T5 tokens
against 16 image tokens at 64 px). Identical padding tokens stay identical through every block,
so N of them act exactly like one token whose attention logit is raised by log N. Pretraining
uses 16 text tokens with that bias on the padding ones: the same function as the 512-token
forward the pipelines run (checked at start-up, to float precision), at about a sixteenth of the cost.

Training: rectified flow as FLUX and SimpleTuner define it (x_s = (1 - s) x0 + s noise, target
noise - x0), s = t through FLUX's shift at 16 image tokens; AdamW, warm-up then cosine decay, EMA
of the weights (the EMA is what ships). Two cosine cycles: 4,500 steps with t uniform, then 3,000
at a lower peak with t logit-normal (SD3's sampling: most steps at mid noise, where the shape is
decided). The second cycle is what lifted the base at 50 steps from 73 % to 87 % of held-out
images; the same 3,000 steps with t uniform left it at 73 % (docs/quality.md, "How the shapes model was made").
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from glance import shapes  # noqa: E402
from glance.files import file_sha256  # noqa: E402
from glance.smallmodel import MODEL_DIR, STAMP_NAME  # noqa: E402

TEXT_TOKENS = 16  # T5 tokens kept in pretraining: every caption's tokens, its </s>, and padding
PIPELINE_TEXT_TOKENS = 512  # what FluxPipeline and SimpleTuner pad T5 prompts to
GUIDANCE_RANGE = (1.0, 5.0)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=MODEL_DIR, help="where the diffusers folder goes")
    parser.add_argument("--workdir", type=Path, default=HERE / "work" / "pretrain", help="checkpoints")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vae-steps", type=int, default=2000)
    parser.add_argument("--vae-batch", type=int, default=16)
    parser.add_argument("--vae-lr", type=float, default=2e-3)
    parser.add_argument("--vae-refine-steps", type=int, default=600, help="a second cosine cycle at --vae-refine-lr")
    parser.add_argument("--vae-refine-lr", type=float, default=5e-4)
    parser.add_argument("--pool", type=int, default=32768, help="pretraining images, encoded once")
    parser.add_argument("--steps", type=int, default=4500, help="transformer steps")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=8e-4)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--refine-steps", type=int, default=3000, help="a second cosine cycle at --refine-lr")
    parser.add_argument("--refine-lr", type=float, default=3e-4)
    parser.add_argument(
        "--refine-timesteps",
        choices=("uniform", "logit-normal"),
        default="logit-normal",
        help="how the second cycle draws t: uniform as the first, or logit-normal (SD3's: most steps at mid noise)",
    )
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--checkpoint-every", type=int, default=250)
    return parser.parse_args(argv)


# --- the components ---------------------------------------------------------------------------


def build_text_encoders(seed: int):
    """CLIP and T5 (with tokenizers) that know the shapes captions; the T5 maps tokens one by one."""
    from transformers import CLIPTextModel

    from glance.tiny.text import clip_config, clip_tokenizer, seeded, t5_encoder, t5_tokenizer

    corpus = [caption.text for caption in shapes.all_captions()]
    tokenizer, tokenizer_2 = clip_tokenizer(corpus), t5_tokenizer(corpus)
    clip = seeded(seed, lambda: CLIPTextModel(clip_config(tokenizer)))
    t5 = t5_encoder(tokenizer_2, seed)
    with torch.no_grad():
        for block in t5.encoder.block:  # no token mixing: see the module docstring
            block.layer[0].SelfAttention.o.weight.zero_()
    return tokenizer, clip.eval(), tokenizer_2, t5.eval()


def build_vae(seed: int):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 32, 64),
        layers_per_block=1,
        latent_channels=16,
        # 2 groups, not one per channel: a GroupNorm over a single channel removes that channel's mean over
        # the image, and the decoder then cannot give a small shape its absolute colour (tried: 85 % judged).
        norm_num_groups=2,
        use_quant_conv=False,
        use_post_quant_conv=False,
        sample_size=shapes.SIZE,
    )


def build_transformer(seed: int):
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,  # 16 latent channels, 2x2 packed
        num_layers=2,
        num_single_layers=4,
        attention_head_dim=64,
        num_attention_heads=3,
        joint_attention_dim=32,  # the T5's d_model
        pooled_projection_dim=32,  # CLIP's hidden size
        guidance_embeds=True,
        axes_dims_rope=[16, 24, 24],
    )


# --- data -------------------------------------------------------------------------------------


def images_to_tensor(images) -> torch.Tensor:
    array = np.stack([np.asarray(image, dtype=np.float32) for image in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2) / 127.5 - 1.0


def vae_batch(step: int, batch: int) -> torch.Tensor:
    offset = 10_000_000  # other images than the transformer's pool
    return images_to_tensor([shapes.training_sample(offset + step * batch + j)[1] for j in range(batch)])


def encode_captions(tokenizer, clip, tokenizer_2, t5, captions):
    """Per caption: pooled CLIP, the T5 vectors of its tokens and </s>, and the padding vector."""
    pooled, tokens, lengths = [], [], []
    with torch.no_grad():
        for caption in captions:
            ids = tokenizer([caption.text], padding="max_length", max_length=77, truncation=True, return_tensors="pt")
            pooled.append(clip(ids.input_ids).pooler_output[0])
            ids_2 = tokenizer_2(
                [caption.text], padding="max_length", max_length=TEXT_TOKENS, truncation=True, return_tensors="pt"
            ).input_ids
            length = int((ids_2[0] != tokenizer_2.pad_token_id).sum())
            assert length < TEXT_TOKENS, f"{caption.text!r} needs more than {TEXT_TOKENS - 1} T5 tokens"
            tokens.append(t5(ids_2).last_hidden_state[0])
            lengths.append(length)
    return torch.stack(pooled), torch.stack(tokens), torch.tensor(lengths)


def padding_bias(lengths: torch.Tensor, image_tokens: int) -> torch.Tensor:
    """Additive attention bias: log((512 - k) / (16 - k)) on the padding keys of a caption of k tokens."""
    positions = torch.arange(TEXT_TOKENS)[None, :]
    real = lengths[:, None]
    bias = torch.log((PIPELINE_TEXT_TOKENS - real).float() / (TEXT_TOKENS - real).float()).expand(-1, TEXT_TOKENS)
    bias = torch.where(positions >= real, bias, torch.zeros(()))
    bias = torch.cat([bias, torch.zeros(len(lengths), image_tokens)], dim=1)
    return bias[:, None, None, :]  # (batch, heads, queries, keys)


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, 16, 8, 8) -> (B, 16 tokens, 64), as FluxPipeline._pack_latents."""
    b, c, h, w = latents.shape
    latents = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return latents.reshape(b, (h // 2) * (w // 2), c * 4)


def image_ids(h: int, w: int) -> torch.Tensor:
    ids = torch.zeros(h, w, 3)
    ids[..., 1] = torch.arange(h)[:, None]
    ids[..., 2] = torch.arange(w)[None, :]
    return ids.reshape(h * w, 3)


def flux_shift(image_tokens: int) -> float:
    """exp(mu) of FLUX.1-dev's dynamic shift at this many image tokens (its scheduler config)."""
    m = (1.15 - 0.5) / (4096 - 256)
    return math.exp(0.5 + m * (image_tokens - 256))


# --- stages -----------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    partial.replace(path)


def cosine_lr(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def two_cycle_lr(step: int, first: tuple[int, float, int], second: tuple[int, float, int]) -> float:
    """A cosine cycle (steps, peak, warm-up), then a second, gentler one: the first leaves the weights
    near a good place, the second settles them (and lets a finished run be extended reproducibly)."""
    steps, peak, warmup = first
    if step < steps:
        return cosine_lr(step, steps, peak, warmup)
    return cosine_lr(step - steps, second[0], second[1], second[2])


def train_vae(args, vae) -> float:
    """Train the VAE; returns its training seconds, summed over every run that resumed it."""
    path = args.workdir / "vae.pt"
    optimizer = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    start, before = 0, 0.0
    if path.exists():
        state = torch.load(path, weights_only=True)
        vae.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, before = state["step"], state.get("seconds", 0.0)
        log(f"vae: resumed at step {start}")
    began = time.perf_counter()
    total = args.vae_steps + args.vae_refine_steps
    for step in range(start, total):
        torch.manual_seed(args.seed * 1_000_003 + step)
        for group in optimizer.param_groups:
            group["lr"] = two_cycle_lr(
                step, (args.vae_steps, args.vae_lr, 100), (args.vae_refine_steps, args.vae_refine_lr, 50)
            )
        images = vae_batch(step, args.vae_batch)
        posterior = vae.encode(images).latent_dist
        reconstruction = vae.decode(posterior.sample()).sample
        loss = torch.nn.functional.mse_loss(reconstruction, images) + 1e-4 * posterior.kl().mean() / images[0].numel()
        l1 = (reconstruction - images).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        (loss + 0.5 * l1).backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        done = step + 1
        if done % 100 == 0:
            rate = (time.perf_counter() - began) / (done - start)
            log(f"vae step {done}/{total} mse {loss.item():.5f} l1 {l1.item():.4f} ({rate:.2f} s/step)")
        if done % args.checkpoint_every == 0 or done == total:
            seconds = before + time.perf_counter() - began
            save_checkpoint(
                path, {"model": vae.state_dict(), "optimizer": optimizer.state_dict(), "step": done, "seconds": seconds}
            )
    return before + time.perf_counter() - began


def judge_vae(vae, count: int = 240) -> float:
    """Share of held-out-caption images whose VAE reconstruction the judge still passes."""
    captions = shapes.held_out_captions()
    passed = 0
    with torch.no_grad():
        for i in range(count):
            caption = captions[i % len(captions)]
            image = shapes.draw(caption, seed=900_000 + i)
            decoded = vae.decode(vae.encode(images_to_tensor([image])).latent_dist.mode()).sample
            passed += shapes.judge(tensor_to_image(decoded[0]), caption).passed
    return passed / count


def tensor_to_image(tensor):
    from PIL import Image

    array = ((tensor.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(array)


def encode_pool(args, vae):
    """The transformer's pretraining images as VAE posteriors (mean, std) and caption indices."""
    path = args.workdir / "pool.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    captions = shapes.all_captions()
    index = {caption: i for i, caption in enumerate(captions)}
    means, stds, labels = [], [], []
    with torch.no_grad():
        for start in range(0, args.pool, 256):
            samples = [shapes.training_sample(i) for i in range(start, min(args.pool, start + 256))]
            posterior = vae.encode(images_to_tensor([image for _, image in samples])).latent_dist
            means.append(posterior.mean)
            stds.append(posterior.std)
            labels.extend(index[caption] for caption, _ in samples)
    pool = {"mean": torch.cat(means), "std": torch.cat(stds), "caption": torch.tensor(labels)}
    save_checkpoint(path, pool)
    return pool


def check_padding_equivalence(transformer, t5, tokenizer_2, pooled, caption) -> float:
    """Max difference between the 512-token forward and the 16-token forward with padding bias."""
    ids_full = tokenizer_2([caption.text], padding="max_length", max_length=PIPELINE_TEXT_TOKENS,
                           return_tensors="pt").input_ids  # fmt: skip
    ids_short = tokenizer_2([caption.text], padding="max_length", max_length=TEXT_TOKENS, return_tensors="pt").input_ids
    length = torch.tensor([int((ids_short[0] != tokenizer_2.pad_token_id).sum())])
    latents = torch.randn(1, 16, 64)
    common = dict(
        hidden_states=latents,
        pooled_projections=pooled[None],
        timestep=torch.tensor([0.7]),
        img_ids=image_ids(4, 4),
        guidance=torch.tensor([1.0]),
    )
    with torch.no_grad():
        full = transformer(
            encoder_hidden_states=t5(ids_full).last_hidden_state,
            txt_ids=torch.zeros(PIPELINE_TEXT_TOKENS, 3),
            **common,
        ).sample
        short = transformer(
            encoder_hidden_states=t5(ids_short).last_hidden_state,
            txt_ids=torch.zeros(TEXT_TOKENS, 3),
            joint_attention_kwargs={"attention_mask": padding_bias(length, 16)},
            **common,
        ).sample
    return float((full - short).abs().max())


def train_transformer(args, transformer, pool, text) -> tuple[dict, float]:
    """Train the transformer; returns its EMA weights and training seconds (summed over resumed runs)."""
    path = args.workdir / "transformer.pt"
    pooled_all, tokens_all, lengths_all = text
    ema = {name: p.detach().clone() for name, p in transformer.named_parameters()}
    optimizer = torch.optim.AdamW(transformer.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.99))
    start, before = 0, 0.0
    if path.exists():
        state = torch.load(path, weights_only=True)
        transformer.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        ema = state["ema"]
        start, before = state["step"], state.get("seconds", 0.0)
        log(f"transformer: resumed at step {start}")
    shift = flux_shift(16)
    ids = image_ids(4, 4)
    txt_ids = torch.zeros(TEXT_TOKENS, 3)
    began = time.perf_counter()
    losses = []
    total = args.steps + args.refine_steps
    for step in range(start, total):
        generator = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        for group in optimizer.param_groups:
            group["lr"] = two_cycle_lr(
                step, (args.steps, args.lr, args.warmup), (args.refine_steps, args.refine_lr, 100)
            )
        pick = torch.randint(len(pool["caption"]), (args.batch,), generator=generator)
        latents = pool["mean"][pick] + pool["std"][pick] * torch.randn(pool["mean"][pick].shape, generator=generator)
        x0 = pack((latents - pool["shift_factor"]) * pool["scaling_factor"])
        noise = torch.randn(x0.shape, generator=generator)
        if step >= args.steps and args.refine_timesteps == "logit-normal":
            t = torch.sigmoid(torch.randn(args.batch, generator=generator))
        else:
            t = torch.rand(args.batch, generator=generator)
        sigma = shift * t / (1 + (shift - 1) * t)
        xt = (1 - sigma[:, None, None]) * x0 + sigma[:, None, None] * noise
        captions = pool["caption"][pick]
        guidance = GUIDANCE_RANGE[0] + (GUIDANCE_RANGE[1] - GUIDANCE_RANGE[0]) * torch.rand(
            args.batch, generator=generator
        )
        prediction = transformer(
            hidden_states=xt,
            encoder_hidden_states=tokens_all[captions],
            pooled_projections=pooled_all[captions],
            timestep=sigma,
            img_ids=ids,
            txt_ids=txt_ids,
            guidance=guidance,
            joint_attention_kwargs={"attention_mask": padding_bias(lengths_all[captions], 16)},
        ).sample
        loss = torch.nn.functional.mse_loss(prediction, noise - x0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(transformer.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():
            decay = min(args.ema, (step + 1) / (step + 10))
            for name, parameter in transformer.named_parameters():
                ema[name].lerp_(parameter.detach(), 1 - decay)
        losses.append(loss.item())
        done = step + 1
        if done % 50 == 0:
            rate = (time.perf_counter() - began) / (done - start)
            eta = rate * (total - done) / 60
            loss_now = np.mean(losses[-50:])
            log(f"transformer step {done}/{total} loss {loss_now:.4f} ({rate:.2f} s/step, {eta:.0f} min left)")
        if done % args.checkpoint_every == 0 or done == total:
            state = {"model": transformer.state_dict(), "optimizer": optimizer.state_dict(), "ema": ema, "step": done}
            save_checkpoint(path, state | {"seconds": before + time.perf_counter() - began})
    return ema, before + time.perf_counter() - began


def save_model(args, vae, transformer, text_encoders, seconds: dict) -> None:
    from diffusers import FluxPipeline

    from glance.files import replace_folder, write_atomic
    from glance.tiny.common import family_scheduler

    tokenizer, clip, tokenizer_2, t5 = text_encoders
    pipeline = FluxPipeline(
        scheduler=family_scheduler("flux"),
        vae=vae,
        text_encoder=clip,
        tokenizer=tokenizer,
        text_encoder_2=t5,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    building = args.out.parent / f".{args.out.name}.building"
    if building.exists():
        import shutil

        shutil.rmtree(building)
    pipeline.save_pretrained(building, safe_serialization=True)
    files = {
        str(path.relative_to(building)): file_sha256(path) for path in sorted(building.rglob("*")) if path.is_file()
    }
    arguments = {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()}
    arguments.pop("out"), arguments.pop("workdir")
    stamp = {
        "script": "benchmarks/pretrain_shapes.py",
        "arguments": arguments,
        "torch": torch.__version__,
        "seconds": seconds,
        "files": files,
    }
    write_atomic(building / STAMP_NAME, json.dumps(stamp, indent=2) + "\n")
    replace_folder(building, args.out)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.workdir.mkdir(parents=True, exist_ok=True)
    seconds = {}  # training loops only, summed over a run and the runs that resumed it

    text_encoders = build_text_encoders(args.seed)
    vae = build_vae(args.seed)
    seconds["vae"] = round(train_vae(args, vae))
    vae.eval()
    log(f"vae: judge passes {judge_vae(vae):.1%} of held-out reconstructions")

    pool = encode_pool(args, vae)
    shift_factor = float(pool["mean"].mean())
    scaling_factor = float(1.0 / (pool["mean"] - shift_factor).std())
    vae.register_to_config(shift_factor=shift_factor, scaling_factor=scaling_factor)
    pool.update(shift_factor=shift_factor, scaling_factor=scaling_factor)
    log(f"pool: {len(pool['caption'])} latents, shift_factor {shift_factor:.4f}, scaling_factor {scaling_factor:.4f}")

    captions = shapes.all_captions()
    tokenizer, clip, tokenizer_2, t5 = text_encoders
    text = encode_captions(tokenizer, clip, tokenizer_2, t5, captions)
    transformer = build_transformer(args.seed)
    gap = check_padding_equivalence(transformer, t5, tokenizer_2, text[0][0], captions[0])
    log(f"padding: 16 tokens with bias vs 512 tokens, max difference {gap:.2e}")
    assert gap < 1e-3, "the padding shortcut is not the pipeline's function"
    ema, transformer_seconds = train_transformer(args, transformer, pool, text)
    seconds["transformer"] = round(transformer_seconds)
    with torch.no_grad():
        for name, parameter in transformer.named_parameters():
            parameter.copy_(ema[name])
    save_model(args, vae, transformer.eval(), text_encoders, seconds)
    log(f"saved {args.out}")


if __name__ == "__main__":
    main()
