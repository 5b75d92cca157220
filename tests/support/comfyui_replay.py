"""What ComfyUI would do with a glance workflow, from ComfyUI's source (no ComfyUI can be installed here).

`CORE_NODES` transcribes the input and output types of the core nodes the workflows may use;
`check_graph` holds an API graph to them. `replay` is a small interpreter: it evaluates the graph
node by node as ComfyUI's executor does (from SaveImage back through the links) and runs each
SamplerCustomAdvanced as one diffusers pipeline call over exactly that node's sigmas, with the LoRA
files its model branch names loaded by ComfyUI's alpha rule. `comfy_merge` is that rule applied to weights.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path

# class_type -> (inputs {name: type}, optional input names, output types). From ComfyUI's source:
# nodes.py (loaders, CLIPTextEncode, LoraLoaderModelOnly, VAEDecode, SaveImage), comfy_extras/nodes_sd3.py
# (TripleCLIPLoader, EmptySD3LatentImage), nodes_flux.py (FluxGuidance, EmptyFlux2LatentImage), nodes_cfg.py
# (CFGNorm) and
# nodes_custom_sampler.py (ManualSigmas, SplitSigmas, KSamplerSelect, RandomNoise, DisableNoise,
# BasicGuider, CFGGuider, SamplerCustomAdvanced).
CORE_NODES: dict[str, tuple[dict[str, str], set[str], tuple[str, ...]]] = {
    "CheckpointLoaderSimple": ({"ckpt_name": "STRING"}, set(), ("MODEL", "CLIP", "VAE")),
    "UNETLoader": ({"unet_name": "STRING", "weight_dtype": "STRING"}, set(), ("MODEL",)),
    "CLIPLoader": ({"clip_name": "STRING", "type": "STRING", "device": "STRING"}, {"device"}, ("CLIP",)),
    "DualCLIPLoader": (
        {"clip_name1": "STRING", "clip_name2": "STRING", "type": "STRING", "device": "STRING"},
        {"device"},
        ("CLIP",),
    ),
    "TripleCLIPLoader": ({"clip_name1": "STRING", "clip_name2": "STRING", "clip_name3": "STRING"}, set(), ("CLIP",)),
    "VAELoader": ({"vae_name": "STRING"}, set(), ("VAE",)),
    "LoraLoaderModelOnly": ({"model": "MODEL", "lora_name": "STRING", "strength_model": "FLOAT"}, set(), ("MODEL",)),
    "CLIPTextEncode": ({"text": "STRING", "clip": "CLIP"}, set(), ("CONDITIONING",)),
    "T5TokenizerOptions": ({"clip": "CLIP", "min_padding": "INT", "min_length": "INT"}, set(), ("CLIP",)),
    "FluxGuidance": ({"conditioning": "CONDITIONING", "guidance": "FLOAT"}, set(), ("CONDITIONING",)),
    "CFGNorm": ({"model": "MODEL", "strength": "FLOAT"}, set(), ("MODEL",)),
    "EmptySD3LatentImage": ({"width": "INT", "height": "INT", "batch_size": "INT"}, set(), ("LATENT",)),
    "EmptyFlux2LatentImage": ({"width": "INT", "height": "INT", "batch_size": "INT"}, set(), ("LATENT",)),
    "ManualSigmas": ({"sigmas": "STRING"}, set(), ("SIGMAS",)),
    "SplitSigmas": ({"sigmas": "SIGMAS", "step": "INT"}, set(), ("SIGMAS", "SIGMAS")),
    "KSamplerSelect": ({"sampler_name": "STRING"}, set(), ("SAMPLER",)),
    "RandomNoise": ({"noise_seed": "INT"}, set(), ("NOISE",)),
    "DisableNoise": ({}, set(), ("NOISE",)),
    "BasicGuider": ({"model": "MODEL", "conditioning": "CONDITIONING"}, set(), ("GUIDER",)),
    "CFGGuider": (
        {"model": "MODEL", "positive": "CONDITIONING", "negative": "CONDITIONING", "cfg": "FLOAT"},
        set(),
        ("GUIDER",),
    ),
    "SamplerCustomAdvanced": (
        {"noise": "NOISE", "guider": "GUIDER", "sampler": "SAMPLER", "sigmas": "SIGMAS", "latent_image": "LATENT"},
        set(),
        ("LATENT", "LATENT"),
    ),
    "VAEDecode": ({"samples": "LATENT", "vae": "VAE"}, set(), ("IMAGE",)),
    "SaveImage": ({"images": "IMAGE", "filename_prefix": "STRING"}, set(), ()),
}
WIDGET_TYPES = {"STRING": str, "INT": int, "FLOAT": (int, float)}
# ComfyUI's ManualSigmas.execute: re.findall over the string, then torch.FloatTensor of the floats.
MANUAL_SIGMAS = re.compile(r"[-+]?(?:\d*\.*\d+)")


def is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def check_graph(graph: dict) -> None:
    """An API graph ComfyUI accepts: core classes, every input present and typed, links to real outputs, no strays."""
    for node_id, node in graph.items():
        assert set(node) <= {"inputs", "class_type", "_meta"}, node
        assert node["class_type"] in CORE_NODES, f"{node_id}: {node['class_type']} is not a core node"
        inputs, optional, _ = CORE_NODES[node["class_type"]]
        assert set(node["inputs"]) <= set(inputs), f"{node_id}: unknown inputs {set(node['inputs']) - set(inputs)}"
        assert set(inputs) - optional <= set(node["inputs"]), f"{node_id}: missing {set(inputs) - set(node['inputs'])}"
        for name, value in node["inputs"].items():
            if is_link(value):
                source = graph.get(value[0])
                assert source is not None, f"{node_id}.{name} links to a missing node {value[0]}"
                outputs = CORE_NODES[source["class_type"]][2]
                assert 0 <= value[1] < len(outputs), f"{node_id}.{name}: no output {value[1]} of {source['class_type']}"
                assert outputs[value[1]] == inputs[name], f"{node_id}.{name} takes {inputs[name]}, gets {outputs}"
            else:
                assert inputs[name] in WIDGET_TYPES, f"{node_id}.{name} needs a link to a {inputs[name]}"
                assert isinstance(value, WIDGET_TYPES[inputs[name]]) and not isinstance(value, bool), (node_id, name)
    [save] = [node_id for node_id, node in graph.items() if node["class_type"] == "SaveImage"]
    reached, todo = set(), [save]
    while todo:
        node_id = todo.pop()
        reached.add(node_id)
        todo += [v[0] for v in graph[node_id]["inputs"].values() if is_link(v) and v[0] not in reached]
    assert reached == set(graph), f"nodes that feed nothing: {set(graph) - reached}"


def manual_sigmas(text: str):
    import torch

    return torch.FloatTensor([float(value) for value in MANUAL_SIGMAS.findall(text)])


def read_comfyui_lora(path: Path) -> tuple[dict, dict[str, float]]:
    """(lora_A/lora_B tensors by key, alpha per module key) as ComfyUI's load_lora reads them."""
    from safetensors.torch import load_file

    tensors = load_file(path)
    alphas = {key.removesuffix(".alpha"): tensor.item() for key, tensor in tensors.items() if key.endswith(".alpha")}
    return {key: tensor for key, tensor in tensors.items() if not key.endswith(".alpha")}, alphas


def comfy_merge(weights: dict, lora_path: Path, strength: float = 1.0) -> dict:
    """Transformer weights (diffusers names) with a LoRA merged by ComfyUI's rule.

    comfy/weight_adapter/lora.py LoRAAdapter.calculate_weight: W += strength * (alpha / rank) * up @ down,
    alpha from the module's `.alpha` tensor (comfy/lora.py load_lora), and 1.0 instead of alpha / rank
    when the file has none.
    """
    tensors, alphas = read_comfyui_lora(lora_path)
    merged = dict(weights)
    for key in [k for k in tensors if k.endswith(".lora_A.weight")]:
        module = key.removesuffix(".lora_A.weight")
        down, up = tensors[key].float(), tensors[f"{module}.lora_B.weight"].float()
        scale = alphas[module] / down.shape[0] if module in alphas else 1.0
        target = f"{module.removeprefix('transformer.')}.weight"
        merged[target] = merged[target] + strength * scale * (up @ down).reshape(merged[target].shape)
    return merged


@dataclass
class Replayed:
    image: object  # PIL image
    trace: list[tuple[float, float, tuple[str, ...]]] = field(default_factory=list)  # (sigma, next, adapters)
    calls: list[dict] = field(default_factory=list)  # what each SamplerCustomAdvanced ran


def replay(graph: dict, pipe, lora_folder: Path, family: str, *, approximate_cfg_norm: bool = False) -> Replayed:
    """Run the graph in diffusers: `pipe` stands for the loaders' files, `lora_folder` is ComfyUI's models/loras.

    CFGNorm has no exact diffusers counterpart; `approximate_cfg_norm` lets it stand for Qwen-Image's own
    true-CFG rescale, to replay the rest of a Qwen-Image graph.
    """
    check_graph(graph)
    result = Replayed(image=None)
    cache: dict[str, tuple] = {}
    consumers: dict[str, set[str]] = {}
    for node in graph.values():
        for v in node["inputs"].values():
            if is_link(v):
                consumers.setdefault(v[0], set()).add(node["class_type"])

    def value(link):
        node_id, index = link
        if node_id not in cache:
            node = graph[node_id]
            inputs = {k: value(v) if is_link(v) else v for k, v in node["inputs"].items()}
            cache[node_id] = evaluate(node_id, node["class_type"], inputs)
        return cache[node_id][index]

    def evaluate(node_id: str, kind: str, inputs: dict) -> tuple:
        if kind in ("UNETLoader", "CheckpointLoaderSimple"):
            return ({"loras": (), "cfg_norm": False}, "clip", "vae")
        if kind in ("CLIPLoader", "DualCLIPLoader", "TripleCLIPLoader"):
            return ("clip",)
        if kind == "VAELoader":
            return ("vae",)
        if kind == "T5TokenizerOptions":  # ComfyUI padding the T5 prompt as the diffusers pipeline does
            return (inputs["clip"],)
        if kind == "LoraLoaderModelOnly":
            model = inputs["model"]
            return ({**model, "loras": (*model["loras"], (inputs["lora_name"], inputs["strength_model"]))},)
        if kind == "CFGNorm":
            assert approximate_cfg_norm, "CFGNorm has no exact diffusers counterpart"
            return ({**inputs["model"], "cfg_norm": True},)
        if kind == "CLIPTextEncode":
            return ({"text": inputs["text"], "guidance": None},)
        if kind == "FluxGuidance":
            return ({**inputs["conditioning"], "guidance": inputs["guidance"]},)
        if kind == "EmptySD3LatentImage":
            assert inputs["batch_size"] == 1
            return ({"width": inputs["width"], "height": inputs["height"], "samples": None},)
        if kind == "ManualSigmas":
            return (manual_sigmas(inputs["sigmas"]),)
        if kind == "SplitSigmas":  # nodes_custom_sampler.py SplitSigmas.get_sigmas
            sigmas, step = inputs["sigmas"], inputs["step"]
            return (sigmas[: step + 1], sigmas[step:])
        if kind == "KSamplerSelect":
            assert inputs["sampler_name"] == "euler", "only Euler is the flow-matching step diffusers takes"
            return ("euler",)
        if kind == "RandomNoise":
            return ({"seed": inputs["noise_seed"]},)
        if kind == "DisableNoise":
            return ({"seed": None},)
        if kind == "BasicGuider":
            return ({"model": inputs["model"], "positive": inputs["conditioning"], "negative": None, "cfg": 1.0},)
        if kind == "CFGGuider":
            return ({k: inputs[k] for k in ("model", "positive", "negative", "cfg")},)
        if kind == "SamplerCustomAdvanced":
            decode = "VAEDecode" in consumers[node_id]  # diffusers decodes inside the pipeline call
            assert not decode or consumers[node_id] == {"VAEDecode"}
            latent = sample(inputs, decode)
            return (latent, latent)
        if kind == "VAEDecode":
            assert inputs["samples"]["image"] is not None
            return (inputs["samples"]["image"],)
        if kind == "SaveImage":
            result.image = inputs["images"]
            return ()
        raise AssertionError(f"no replay for {kind}")

    def sample(inputs: dict, decode: bool) -> dict:
        noise, guider, latent, sigmas = inputs["noise"], inputs["guider"], inputs["latent_image"], inputs["sigmas"]
        if noise["seed"] is None:  # DisableNoise: only meaningful on a latent a sampler left off at sigmas[0]
            assert latent["samples"] is not None and latent["end_sigma"] == float(sigmas[0])
        else:
            assert latent["samples"] is None, "RandomNoise on an empty latent starts the image"
        loaded = getattr(pipe.transformer, "peft_config", {})
        names = [adapter_name(file) for file, _ in guider["model"]["loras"]]
        weights = [strength for _, strength in guider["model"]["loras"]]
        for (file, _), name in zip(guider["model"]["loras"], names, strict=True):
            if name not in loaded:
                load_lora(pipe, lora_folder / file, name)
        if names:
            pipe.set_adapters(names, adapter_weights=weights)
        elif getattr(pipe.transformer, "peft_config", None):
            pipe.disable_lora()
        kwargs = _guidance(guider, family)
        call = {"sigmas": [float(s) for s in sigmas], "loras": names, **kwargs}
        result.calls.append(call)
        output = _run_segment(
            pipe,
            prompt=guider["positive"]["text"],
            sigmas=[float(s) for s in sigmas],
            width=latent["width"],
            height=latent["height"],
            seed=noise["seed"],
            latents=latent["samples"],
            decode=decode,
            trace=result.trace,
            **kwargs,
        )
        return {**latent, "samples": None if decode else output, "image": output if decode else None,
                "end_sigma": float(sigmas[-1])}  # fmt: skip

    save = next(k for k, n in graph.items() if n["class_type"] == "SaveImage")
    node = graph[save]
    evaluate(save, "SaveImage", {k: value(v) for k, v in node["inputs"].items() if is_link(v)})
    return result


def _guidance(guider: dict, family: str) -> dict:
    """The diffusers arguments a guider means, per family.

    FLUX: the conditioning's guidance goes to the guidance embedding (ComfyUI's Flux model takes 3.5
    without a FluxGuidance node, comfy/model_base.py). SD3: CFGGuider is CFG against the negative prompt,
    BasicGuider none (guidance_scale 1); Chroma the same. Z-Image: CFGGuider at cfg is ZImagePipeline's s = cfg - 1,
    BasicGuider s = 0. Qwen-Image: CFGGuider + CFGNorm is true CFG, BasicGuider none.
    """
    positive, negative = guider["positive"], guider["negative"]
    if family == "flux":
        assert negative is None, "FLUX.1-dev is guidance-distilled: no CFG"
        return {"guidance_scale": positive["guidance"] if positive["guidance"] is not None else 3.5}
    assert positive["guidance"] is None, f"FluxGuidance means nothing to {family}"
    if family in ("sd3", "chroma"):
        assert not guider["model"]["cfg_norm"]
        if negative is None:
            return {"guidance_scale": 1.0}
        return {"guidance_scale": guider["cfg"], "negative_prompt": negative["text"]}
    if family == "z_image":  # ZImagePipeline's CFG s is ComfyUI's cfg - 1; s = 0 is none
        assert not guider["model"]["cfg_norm"]
        if negative is None:
            return {"guidance_scale": 0.0}
        return {"guidance_scale": guider["cfg"] - 1, "negative_prompt": negative["text"]}
    if negative is None:
        return {"true_cfg_scale": 1.0}
    assert guider["model"]["cfg_norm"], "QwenImagePipeline's true CFG always rescales"
    return {"true_cfg_scale": guider["cfg"], "negative_prompt": negative["text"]}


def adapter_name(lora_file: str) -> str:
    """The diffusers adapter a LoRA file becomes (peft's module dicts take no dots)."""
    return Path(lora_file).stem.replace(".", "_")


def load_lora(pipe, path: Path, adapter_name: str) -> None:
    """A ComfyUI LoRA file as a diffusers adapter with ComfyUI's scale: alpha / rank from its .alpha tensors."""
    tensors, alphas = read_comfyui_lora(path)
    modules = sorted(key.removesuffix(".lora_A.weight") for key in tensors if key.endswith(".lora_A.weight"))
    rank = tensors[f"{modules[0]}.lora_A.weight"].shape[0]
    values = {alphas.get(module, float(rank)) for module in modules}  # no .alpha: ComfyUI's scale 1.0
    assert len(values) == 1, "one alpha for every module"
    metadata = {
        "transformer.r": rank,
        "transformer.lora_alpha": values.pop(),
        "transformer.target_modules": [m.removeprefix("transformer.") for m in modules],
    }
    pipe.transformer.load_lora_adapter(tensors, prefix="transformer", adapter_name=adapter_name, metadata=metadata)


def _run_segment(pipe, *, prompt, sigmas, width, height, seed, latents, decode, trace, **kwargs):
    """One pipeline call stepping from sigmas[0] through sigmas[-1] exactly (diffusers always ends at 0)."""
    import functools

    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler

    # No shift: ManualSigmas are used as they are (ComfyUI's model sampling only shifts the schedules it makes).
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(
        pipe.scheduler.config, shift=1.0, use_dynamic_shifting=False, shift_terminal=None
    )
    set_timesteps = scheduler.set_timesteps

    @functools.wraps(set_timesteps)  # the pipelines inspect its signature for `sigmas`
    def ending_at_the_last_sigma(*args, **kw):
        set_timesteps(*args, **kw)
        scheduler.sigmas[-1] = sigmas[-1]  # the sampler ends at its last sigma, the next one starts there

    scheduler.set_timesteps = ending_at_the_last_sigma
    pipe.scheduler = scheduler
    step = scheduler.step

    def recording_step(*args, **kw):
        scheduler = pipe.scheduler
        index = scheduler.step_index if scheduler.step_index is not None else 0
        adapters = tuple(pipe.get_active_adapters()) if getattr(pipe.transformer, "peft_config", None) else ()
        trace.append((float(scheduler.sigmas[index]), float(scheduler.sigmas[index + 1]), adapters))
        return step(*args, **kw)

    pipe.scheduler.step = recording_step
    generator = torch.Generator("cpu").manual_seed(seed) if seed is not None else None
    images = pipe(
        prompt=prompt,
        width=width,
        height=height,
        sigmas=sigmas[:-1],
        num_inference_steps=len(sigmas) - 1,
        latents=latents,
        generator=generator,
        output_type="pil" if decode else "latent",
        **kwargs,
    ).images
    return images[0] if decode else images
