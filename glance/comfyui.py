"""A Glance pair as a ComfyUI workflow: the API-format graph (what ComfyUI's `/prompt` takes and its
front end opens, and what its SaveImage writes into a PNG's `prompt` text chunk).

The graph samples exactly what `glance infer` samples, with ComfyUI's core nodes only:
ManualSigmas(slow + fast + [0]) -> SplitSigmas(step = len(slow)) -> one SamplerCustomAdvanced over the
high sigmas with the slow-LoRA model and RandomNoise(seed), a second over the low sigmas with the
fast-LoRA model, DisableNoise and the first one's output as its latent. ComfyUI's flow models undo the
noise scaling at the end of a sampler call and redo it at the start of the next (comfy/model_sampling.py
CONST.inverse_noise_scaling / noise_scaling; comfy/samplers.py), so the second call continues the same
latent from the split sigma: glance's one loop. Per-family loaders and guidance come from
`Family.comfyui` (glance/families.py). Nothing here imports torch.
"""

from __future__ import annotations

import json
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from glance.families import ComfyUISetup, GlanceError, get_family

PNG_PROMPT_KEY = "prompt"  # the text chunk ComfyUI's SaveImage writes the API graph to (nodes.py, SaveImage)
SLOW_LORA_FILE = "glance-slow.safetensors"
FAST_LORA_FILE = "glance-fast.safetensors"
WORKFLOW_FILE = "glance-workflow.json"
SAMPLER = "euler"  # KSamplerSelect: ComfyUI's Euler is the flow-matching Euler step diffusers takes
STRENGTH = 1.0  # LoraLoaderModelOnly: the trained strength comes from the file's .alpha tensors


class ComfyUIFiles(BaseModel):
    """The file names the workflow's loader nodes ask for, as they lie in ComfyUI's models/ folders."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    text_encoders: tuple[str, ...]
    vae: str | None  # None: the checkpoint's VAE (CheckpointLoaderSimple)
    slow_lora: str = SLOW_LORA_FILE
    fast_lora: str = FAST_LORA_FILE


def default_files(
    family_name: str,
    model: str,
    *,
    model_file: str | None = None,
    text_encoders: tuple[str, ...] | None = None,
    vae_file: str | None = None,
) -> ComfyUIFiles:
    """ComfyUI users' names for the base model's files (the hub id picks among a family's models); overrides win."""
    setup = comfyui_setup(family_name, model)
    if text_encoders is not None and len(text_encoders) != len(setup.text_encoder_files):
        need = len(setup.text_encoder_files)
        raise GlanceError(
            f"--text-encoder: {setup.text_encoder_loader} loads {need} file(s) for {family_name}, "
            f"in this order: {', '.join(setup.text_encoder_files)}; give it {need} time(s)"
        )
    if vae_file is not None and setup.vae_file is None:
        raise GlanceError(f"--vae: {family_name} takes its VAE from the checkpoint ({setup.model_loader})")
    return ComfyUIFiles(
        model=model_file or setup.model_files.get(model, setup.model_file),
        text_encoders=tuple(text_encoders or setup.text_encoder_files),
        vae=vae_file or setup.vae_file,
    )


def comfyui_setup(family_name: str, model: str | None = None) -> ComfyUISetup:
    """The family's ComfyUI setup; `model` (a hub id or folder) picks a flavour's where they differ (FLUX.2)."""
    family = get_family(family_name)
    if model is not None:
        family = family.for_model(model)
    if family.comfyui is None:
        raise GlanceError(f"glance has no ComfyUI workflow for the {family_name} family")
    return family.comfyui


class WorkflowSpec(BaseModel):
    """One image, as ComfyUI should sample it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: str
    model: str | None = None  # the base model (hub id or folder): picks a FLUX.2 flavour's nodes and files
    prompt: str
    negative_prompt: str | None = None
    seed: int = Field(0, ge=0, le=0xFFFFFFFFFFFFFFFF)  # RandomNoise's range
    width: int = Field(ge=16)
    height: int = Field(ge=16)
    sigmas: list[float] = Field(min_length=1)  # each step's sigma; the graph appends the final 0
    switch: int | None = None  # the step the fast LoRA starts at; None: no LoRAs (a base-model image)
    guidance: float | None = None  # diffusers' guidance_scale: FLUX's embedded guidance, the others' CFG scale
    true_cfg: float | None = None  # Qwen-Image's true CFG, against negative_prompt
    files: ComfyUIFiles
    filename_prefix: str = "glance"


def manual_sigmas_text(sigmas: list[float]) -> str:
    """The ManualSigmas string: every sigma, then 0.

    ComfyUI parses it with re.findall(r"[-+]?(?:\\d*\\.*\\d+)", ...) into a float32 tensor
    (comfy_extras/nodes_custom_sampler.py, ManualSigmas), which reads no exponent: "1e-05" would
    become 1 and -5. Each value is written in positional notation, with the digits of Python's
    repr, so it parses back to the very float32 diffusers steps through.
    """
    return ", ".join(format(Decimal(repr(float(value))), "f") for value in [*sigmas, 0.0])


def build_workflow(spec: WorkflowSpec) -> dict:
    """The API-format graph: {node id: {"inputs", "class_type", "_meta"}}, links as [node id, output index]."""
    setup = comfyui_setup(spec.family, spec.model)
    if spec.switch is not None and not 0 < spec.switch < len(spec.sigmas):
        raise GlanceError(f"the switch step {spec.switch} does not split {len(spec.sigmas)} sigmas in two")
    graph = _Graph()
    files = spec.files

    if setup.model_loader == "CheckpointLoaderSimple":
        checkpoint = graph.add("CheckpointLoaderSimple", "Base model (checkpoint)", ckpt_name=files.model)
        model, vae = [checkpoint, 0], [checkpoint, 2]
    else:
        model = [graph.add("UNETLoader", "Base model", unet_name=files.model, weight_dtype="default"), 0]
        vae = None
    encoder_inputs = {f"clip_name{i}": name for i, name in enumerate(files.text_encoders, start=1)}
    if setup.text_encoder_loader == "CLIPLoader":
        encoder_inputs = {"clip_name": files.text_encoders[0]}
    if setup.clip_type is not None:
        encoder_inputs["type"] = setup.clip_type
    clip = [graph.add(setup.text_encoder_loader, "Text encoders", **encoder_inputs), 0]
    if setup.t5_tokenizer_options is not None:  # pad the T5 prompt as diffusers does: the model attends to the padding
        min_padding, min_length = setup.t5_tokenizer_options
        clip = [graph.add("T5TokenizerOptions", "T5 padding as diffusers (do not change)", clip=clip,
                          min_padding=min_padding, min_length=min_length), 0]  # fmt: skip
    if vae is None:
        vae = [graph.add("VAELoader", "VAE", vae_name=files.vae), 0]

    positive = [graph.add("CLIPTextEncode", "Prompt", text=spec.prompt, clip=clip), 0]
    negative, cfg = None, None
    if setup.guidance == "flux_guidance":
        # FluxPipeline passes guidance_scale to FLUX's guidance embedding: FluxGuidance on the prompt.
        guidance = spec.guidance if spec.guidance is not None else 3.5  # FluxPipeline's default guidance_scale
        positive = [graph.add("FluxGuidance", "Guidance (as trained)", conditioning=positive, guidance=guidance), 0]
    elif setup.guidance == "cfg" and spec.guidance is not None and spec.guidance > 1:
        cfg = spec.guidance  # StableDiffusion3Pipeline and ChromaPipeline run CFG only when guidance_scale > 1
    elif setup.guidance == "cfg_plus_one" and spec.guidance is not None and spec.guidance > 0:
        # ZImagePipeline: pos + s * (pos - neg) when s > 0, which is ComfyUI's neg + cfg * (pos - neg) at cfg = s + 1.
        cfg = spec.guidance + 1
    elif setup.guidance == "true_cfg" and spec.true_cfg is not None and spec.true_cfg > 1:
        cfg = spec.true_cfg  # QwenImagePipeline: true CFG when true_cfg_scale > 1 and a negative prompt is given
    if cfg is not None:
        text = spec.negative_prompt if spec.negative_prompt is not None else ""
        negative = [graph.add("CLIPTextEncode", "Negative prompt", text=text, clip=clip), 0]

    latent = [graph.add(setup.empty_latent_node, "Size", width=spec.width, height=spec.height, batch_size=1), 0]
    sigmas = [graph.add("ManualSigmas", "Trained sigmas (do not change)", sigmas=manual_sigmas_text(spec.sigmas)), 0]
    sampler = [graph.add("KSamplerSelect", "Sampler (euler)", sampler_name=SAMPLER), 0]

    steps = len(spec.sigmas)
    if spec.switch is None:
        segments = [(model, sigmas, f"Sample (base model, {steps} steps)")]
    else:
        title = f"Switch to the fast LoRA after step {spec.switch}"
        split = graph.add("SplitSigmas", title, sigmas=sigmas, step=spec.switch)
        slow = graph.add("LoraLoaderModelOnly", "Glance slow LoRA", model=model, lora_name=files.slow_lora,
                         strength_model=STRENGTH)  # fmt: skip
        fast = graph.add("LoraLoaderModelOnly", "Glance fast LoRA", model=model, lora_name=files.fast_lora,
                         strength_model=STRENGTH)  # fmt: skip
        segments = [
            ([slow, 0], [split, 0], f"Sample steps 1-{spec.switch} (slow LoRA)"),
            ([fast, 0], [split, 1], f"Sample steps {spec.switch + 1}-{steps} (fast LoRA)"),
        ]

    noise = [graph.add("RandomNoise", "Seed", noise_seed=spec.seed), 0]
    for index, (branch, segment_sigmas, title) in enumerate(segments):
        if cfg is not None and setup.guidance == "true_cfg":
            # diffusers rescales the true-CFG prediction to the norm of the conditional one; CFGNorm is
            # ComfyUI's node for it (comfy_extras/nodes_cfg.py), though it rescales per latent pixel on
            # the denoised image and only ever scales down: close to diffusers, not equal.
            branch = [graph.add("CFGNorm", "True-CFG rescale", model=branch, strength=1.0), 0]
        if cfg is None:
            guider = graph.add("BasicGuider", "Guider", model=branch, conditioning=positive)
        else:
            guider = graph.add("CFGGuider", "Guider", model=branch, positive=positive, negative=negative, cfg=cfg)
        if index == 1:  # the second half continues the first half's latent: no new noise
            noise = [graph.add("DisableNoise", "No new noise (continue the latent)"), 0]
        latent = [graph.add("SamplerCustomAdvanced", title, noise=noise, guider=[guider, 0], sampler=sampler,
                            sigmas=segment_sigmas, latent_image=latent), 0]  # fmt: skip

    image = [graph.add("VAEDecode", "Decode", samples=latent, vae=vae), 0]
    graph.add("SaveImage", "Save", images=image, filename_prefix=spec.filename_prefix)
    return graph.nodes


def spec_from_record(record: dict, files: ComfyUIFiles | None = None) -> WorkflowSpec:
    """The workflow of an image from the record glance writes into its PNG (glance/records.py)."""
    steps = record["steps"]
    switch = None
    if record.get("kind") == "glance":
        switch = next((i for i, step in enumerate(steps) if step["adapters"] == ["fast"]), None)
        if switch is None:
            raise GlanceError("the record has no step with the fast LoRA")
    return WorkflowSpec(
        family=record["family"],
        model=record.get("model"),
        prompt=record["prompt"],
        negative_prompt=record.get("negative_prompt"),
        seed=record["seed"],
        width=record["width"],
        height=record["height"],
        sigmas=[step["sigma"] for step in steps],
        switch=switch,
        guidance=record.get("guidance"),
        true_cfg=record.get("true_cfg"),
        files=files or default_files(record["family"], record["model"]),
    )


def png_prompt(record: dict) -> str:
    """The `prompt` text chunk of an image glance writes: its own workflow, as ComfyUI's SaveImage writes it."""
    return json.dumps(build_workflow(spec_from_record(record)))


class _Graph:
    """Nodes numbered in the order they are added (ComfyUI's own API exports use numeric ids)."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict] = {}

    def add(self, class_type: str, title: str, **inputs) -> str:
        node_id = str(len(self.nodes) + 1)
        self.nodes[node_id] = {"inputs": inputs, "class_type": class_type, "_meta": {"title": title}}
        return node_id
