"""The model card of a pushed Glance pair: Hub metadata, what was trained, and how to sample it exactly.

The card's diffusers snippet is the point of it: loaded with diffusers' defaults, the two LoRAs
would sample re-shifted sigmas and lose what they were trained for. The snippet rebuilds the
scheduler without shift, passes the trained sigmas and switches adapters after the last slow
step, with no glance import. A test runs it and compares its pixels with `glance infer`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

from glance.families import get_family, guidance_kwargs
from glance.manifest import PHASES, WEIGHTS_NAME, RunManifest
from glance.schedule import switch_step

COMFYUI_MINIMUM = "ComfyUI 0.7.0 or newer"  # ManualSigmas first shipped in 0.7.0
# Licences glance knows, per base model (Hub metadata keys). Others get no licence line.
KNOWN_LICENSES: dict[str, dict[str, str]] = {
    "black-forest-labs/FLUX.1-dev": {
        "license": "other",
        "license_name": "flux-1-dev-non-commercial-license",
        "license_link": "https://huggingface.co/black-forest-labs/FLUX.1-dev/blob/main/LICENSE.md",
    },
    "Qwen/Qwen-Image": {"license": "apache-2.0"},
    "Qwen/Qwen-Image-2512": {"license": "apache-2.0"},
    "lodestones/Chroma1-HD": {"license": "apache-2.0"},
    "Tongyi-MAI/Z-Image": {"license": "apache-2.0"},
    "black-forest-labs/FLUX.2-klein-base-4B": {"license": "apache-2.0"},
    "stabilityai/stable-diffusion-3-medium-diffusers": {
        "license": "other",
        "license_name": "stabilityai-ai-community",
        "license_link": "https://huggingface.co/stabilityai/stable-diffusion-3-medium-diffusers/blob/main/LICENSE.md",
    },
    "stabilityai/stable-diffusion-3.5-medium": {
        "license": "other",
        "license_name": "stabilityai-ai-community",
        "license_link": "https://huggingface.co/stabilityai/stable-diffusion-3.5-medium/blob/main/LICENSE.md",
    },
    "stabilityai/stable-diffusion-3.5-large": {
        "license": "other",
        "license_name": "stabilityai-ai-community",
        "license_link": "https://huggingface.co/stabilityai/stable-diffusion-3.5-large/blob/main/LICENSE.md",
    },
}


@dataclass(frozen=True)
class Sample:
    """A sample image in the repo and the prompt it was rendered from."""

    path: str  # inside the repo, e.g. images/sample-1.png
    prompt: str
    seed: int


@dataclass(frozen=True)
class TrainingImage:
    path: str  # inside the repo
    caption: str


def sampling_kwargs(manifest: RunManifest) -> dict:
    """The guidance arguments `glance infer` passes by default for this run (families.guidance_kwargs)."""
    family = get_family(manifest.family).for_model(manifest.model)  # FLUX.2 [dev] guides otherwise than [klein]
    return guidance_kwargs(family.recipe, guidance=manifest.train_guidance)


def diffusers_snippet(manifest: RunManifest, repo_id: str, base_model: str, prompt: str, seed: int = 0) -> str:
    """Plain diffusers code that samples the pair exactly as `glance infer` does."""
    family = get_family(manifest.family).for_model(manifest.model)
    pipeline_class = family.pipeline_class_for(manifest.model_path or manifest.model)  # the class its model is
    lists = manifest.lists
    kwargs = "".join(f"    {name}={_py(value)},\n" for name, value in sampling_kwargs(manifest).items())
    loads = "".join(
        f'pipe.load_lora_weights(repo_id, subfolder="glance-{phase}", weight_name="{WEIGHTS_NAME}", '
        f'adapter_name="{phase}")\n'
        for phase in PHASES
    )
    return f"""import torch
from diffusers import FlowMatchEulerDiscreteScheduler, {pipeline_class}

repo_id = {_py(repo_id)}
base_model = {_py(base_model)}
device = "cuda" if torch.cuda.is_available() else "cpu"
dtype = torch.bfloat16 if device == "cuda" else torch.float32

pipe = {pipeline_class}.from_pretrained(base_model, dtype=dtype, use_safetensors=True)
{loads}pipe.set_adapters("slow")
pipe.to(device)  # a GPU too small for the whole pipeline: pipe.enable_model_cpu_offload() instead

# Step through exactly the sigmas the LoRAs were trained on: no shift, no terminal stretch.
pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(
    pipe.scheduler.config, shift=1.0, use_dynamic_shifting=False, shift_terminal=None
)
slow_sigmas = {lists.slow_sigmas!r}
fast_sigmas = {lists.fast_sigmas!r}


def switch_to_fast(pipe, step, timestep, callback_kwargs):
    if step == len(slow_sigmas) - 1:  # after the last slow step
        pipe.set_adapters("fast")
    return {{}}


image = pipe(
    prompt={_py(prompt)},
    width={manifest.resolution},
    height={manifest.resolution},
{kwargs}    sigmas=slow_sigmas + fast_sigmas,
    num_inference_steps=len(slow_sigmas) + len(fast_sigmas),
    callback_on_step_end=switch_to_fast,
    generator=torch.Generator("cpu").manual_seed({seed}),
).images[0]
image.save("glance.png")
"""


def front_matter(manifest: RunManifest, base_model: str, samples: list[Sample], training: TrainingImage | None) -> dict:
    """The card's YAML metadata, as the Hub reads it."""
    data: dict = {
        "base_model": base_model,
        "library_name": "diffusers",
        "pipeline_tag": "text-to-image",
        **KNOWN_LICENSES.get(base_model, {}),
        "tags": ["text-to-image", "diffusers", "lora", "glance", manifest.family],
    }
    if samples:
        data["widget"] = [{"text": s.prompt, "output": {"url": s.path}} for s in samples]
    if training is not None:
        data["instance_prompt"] = training.caption
    return data


def render_card(
    manifest: RunManifest,
    *,
    repo_id: str,
    base_model: str,
    samples: list[Sample],
    training: TrainingImage | None = None,
    evaluation: str | None = None,
) -> str:
    """README.md of the repo: front matter, what was trained, how to sample it; `glance eval`'s table when given."""
    from huggingface_hub import ModelCardData

    lists = manifest.lists
    switch = switch_step(lists)
    total = len(lists.sigmas)
    prompt = samples[0].prompt if samples else (training.caption if training else "your prompt")
    seed = samples[0].seed if samples else 0
    guidance = ", ".join(f"`{k}={_py(v)}`" for k, v in sampling_kwargs(manifest).items())
    versions = ", ".join(f"{name} {version}" for name, version in sorted(manifest.versions.items()))
    image_row = (
        f"[{training.path}]({training.path}), caption: {_py(training.caption)}"
        if training
        else "one image and its caption (not published)"
    )
    rows = [
        ("base model", f"[{base_model}](https://huggingface.co/{base_model})"),
        ("trained on", image_row),
        ("resolution", f"{manifest.resolution} px"),
        ("steps per LoRA", str(manifest.steps)),
        ("LoRA rank", str(manifest.rank)),
        ("learning rate", f"{manifest.learning_rate:g}"),
        ("slow timesteps", _numbers(lists.slow)),
        ("fast timesteps", _numbers(lists.fast)),
        ("switch", f"the fast LoRA from step {switch + 1} of {total}"),
        ("guidance", guidance),
        ("trained with", versions or "glance"),
    ]
    table = "| | |\n| --- | --- |\n" + "".join(f"| {name} | {value} |\n" for name, value in rows)
    gallery = "".join(f"![{s.prompt}]({s.path})\n\n_{s.prompt}_ (seed {s.seed})\n\n" for s in samples)
    metadata = ModelCardData(**front_matter(manifest, base_model, samples, training)).to_yaml()
    name = repo_id.split("/")[-1]
    evaluation_section = f"{evaluation}\n" if evaluation else ""
    return f"""---
{metadata}
---

# {name}

A [Glance](https://arxiv.org/abs/2512.02899) LoRA pair for [{base_model}](https://huggingface.co/{base_model}),
trained with glance on one image. `glance-slow` learnt the first, high-noise steps and `glance-fast`
the later ones; together they sample in {total} steps, **on exactly the sigmas they were trained on**.
Loaded with a pipeline's default scheduler, the sigmas are shifted and the pair loses its point: use
one of the two ways below.

{gallery}## What was trained

{table}
{evaluation_section}## Sample with diffusers

```python
{diffusers_snippet(manifest, repo_id, base_model, prompt, seed).rstrip()}
```

## Sample with glance

```bash
glance infer --lora-repo {repo_id} {_shell_quote(prompt)} --seed {seed}
```

`glance.json` is the training run's manifest (lists, guidance, resolution); `glance infer` reads it,
and fits the base model to your GPU (quantization, CPU offload) by its memory plan.

{comfyui_section(manifest)}"""


def comfyui_section(manifest: RunManifest) -> str:
    """How to use the pushed comfyui/ files (glance/export.py writes them)."""
    family = get_family(manifest.family)
    switch = switch_step(manifest.lists)
    text = f"""## Use in ComfyUI

`comfyui/` holds both LoRAs for ComfyUI, with their trained strength as `.alpha` tensors (ComfyUI runs a
LoRA without them at scale 1, not the trained alpha / rank = {family.recipe.alpha_per_rank}), and
`comfyui/glance-workflow.json`, a workflow of ComfyUI's core nodes on exactly the trained sigmas. Put
`glance-slow.safetensors` and `glance-fast.safetensors` into `ComfyUI/models/loras/` and the base model's files where
[comfyui/README.md](comfyui/README.md) says, then drag the workflow (or a sample image: each carries
its workflow) onto ComfyUI ({COMFYUI_MINIMUM}: the workflow's ManualSigmas node first shipped in 0.7.0).
Change the prompt and the seed; keep the ManualSigmas list, the SplitSigmas step ({switch}), the euler
sampler and the LoRA strengths (1.0) as they are. ComfyUI's SaveImage floors pixel values where
diffusers rounds, so even from the same latent its PNG may differ from the snippet's by one level.
"""
    if family.comfyui is not None and family.comfyui.guidance == "cfg_plus_one":
        text += """
Z-Image's guidance is CFG as `ZImagePipeline` computes it, pos + s x (pos - neg), on when s > 0: the
workflow's CFGGuider takes ComfyUI's cfg = s + 1 for the same image (s = 0, no CFG, is a BasicGuider).
"""
    if family.comfyui is not None and family.comfyui.guidance == "true_cfg":
        text += """
Qwen-Image's true CFG rescale (diffusers normalises each token of the guided prediction) has no
ComfyUI core node; the workflow uses CFGNorm instead, so its images are close to the snippet's, not equal.
"""
    return text


def _py(value) -> str:
    """A Python literal for the snippet; strings in double quotes, like the code around them."""
    import json

    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)


def _numbers(values) -> str:
    return ", ".join(f"{v:.4f}".rstrip("0").rstrip(".") for v in values)


def _shell_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)
