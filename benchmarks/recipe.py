"""The published two-call recipe (../shared/seed, step 4) that glance replaces, for the benchmarks to run.

Two pipelines, each with one LoRA: the slow one samples the slow sigmas to a latent (`output_type="latent"`),
the fast one continues that latent on the fast sigmas, with the same generator. As published, except
`torch_dtype` renamed `dtype`, float32 on the CPU, and the size given. benchmarks/run.py times it against
`glance infer`; benchmarks/quality.py judges its images.
"""

from __future__ import annotations

from pathlib import Path


def recipe_sigmas(manifest) -> tuple[list[float], list[float]]:
    """The run's 0-1000 timestep lists as the recipe passes them: divided by 1000 (slow, fast)."""
    return [t / 1000.0 for t in manifest.slow_timesteps], [t / 1000.0 for t in manifest.fast_timesteps]


def recipe_pipeline(model: Path | str, lora_dir: Path):
    """One of the recipe's two pipelines: the base model with one LoRA loaded."""
    import torch
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(str(model), dtype=torch.float32, use_safetensors=True).to("cpu")
    pipe.load_lora_weights(str(lora_dir))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def slow_call(pipe, prompt: str, sigmas: list[float], generator, size: int, callback=None):
    """The recipe's first call: the slow sigmas, to a latent."""
    return pipe(
        prompt=prompt,
        callback_on_step_end=callback,
        num_inference_steps=len(sigmas),
        sigmas=sigmas,
        output_type="latent",
        generator=generator,
        height=size,
        width=size,
    ).images


def fast_call(pipe, prompt: str, sigmas: list[float], latents, generator, size: int, callback=None):
    """The recipe's second call: the fast sigmas from the first call's latent, at guidance 1."""
    return pipe(
        prompt=prompt,
        callback_on_step_end=callback,
        num_inference_steps=len(sigmas),
        sigmas=sigmas,
        latents=latents,
        guidance_scale=1.0,
        generator=generator,
        height=size,
        width=size,
    ).images[0]
