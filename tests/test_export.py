"""glance export comfyui, and the ComfyUI workflow in every PNG: checked against what ComfyUI's source does.

No ComfyUI can be installed here. tests/support/comfyui_replay.py transcribes the core nodes' inputs and
outputs, ComfyUI's LoRA merge rule and its ManualSigmas parser; its interpreter replays a workflow in
diffusers, one pipeline call per SamplerCustomAdvanced. The tiny models of every family run in seconds;
the session's trained FLUX pair (`trained_run`) runs the same checks on real SimpleTuner LoRAs.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.comfyui_replay import (
    MANUAL_SIGMAS,
    adapter_name,
    check_graph,
    comfy_merge,
    manual_sigmas,
    replay,
)
from support.tiny_models import SIZE, write_finished_run
from typer.testing import CliRunner

from glance.cli import app
from glance.comfyui import build_workflow, manual_sigmas_text, spec_from_record
from glance.families import FAMILIES
from glance.infer import options_from_manifest, run_infer
from glance.manifest import MANIFEST_NAME, load_manifest
from glance.records import read_png_parameters

PROMPT = "a red circle and a blue square on a warm gradient"
FILES = {"glance-slow.safetensors", "glance-fast.safetensors", "glance-workflow.json", "README.md"}


def tiny_run(tiny_family, root: Path, caption: str = PROMPT) -> Path:
    """A finished run folder for a tiny model: manifest, both LoRA folders, the staged caption."""
    output = write_finished_run(tiny_family, root / f"run-{tiny_family.family}")
    (output / "dataset").mkdir()
    (output / "dataset" / "glance.txt").write_text(caption + "\n")
    return output


TINY_MODEL_FILE = "tiny.safetensors"  # a tiny model's LoRAs fit no real model's default file: name the tiny one


def export(run: Path, out: Path, *args: str):
    model_file = [] if "--model-file" in args else ["--model-file", TINY_MODEL_FILE]
    result = CliRunner().invoke(app, ["export", "comfyui", "-o", str(run), "--out", str(out), *model_file, *args])
    return result


def nodes(graph: dict, class_type: str) -> list[tuple[str, dict]]:
    return [(node_id, node) for node_id, node in graph.items() if node["class_type"] == class_type]


def pixels(image) -> np.ndarray:
    if isinstance(image, Path):
        with Image.open(image) as opened:
            return np.asarray(opened.convert("RGB"))
    return np.asarray(image.convert("RGB"))


def load_pipeline(family: str, model: Path):
    import diffusers
    import torch

    pipe = getattr(diffusers, FAMILIES[family].pipeline_class).from_pretrained(
        str(model), dtype=torch.float32, use_safetensors=True
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


# The workflow graph


@pytest.mark.parametrize("family", FAMILIES)
def test_workflow_samples_the_trained_sigmas_with_the_switch(tiny, family, tmp_path):
    model = tiny(family)
    result = export(tiny_run(model, tmp_path), tmp_path / "comfyui", "--seed", "7")
    assert result.exit_code == 0, result.output
    assert {p.name for p in (tmp_path / "comfyui").iterdir()} == FILES
    graph = json.loads((tmp_path / "comfyui" / "glance-workflow.json").read_text())
    check_graph(graph)

    [(sigmas_id, sigmas_node)] = nodes(graph, "ManualSigmas")
    parsed = manual_sigmas(sigmas_node["inputs"]["sigmas"]).tolist()
    assert parsed == [*model.lists.sigmas, 0.0]  # ComfyUI's parser gives back the float32 glance infer steps on
    [(split_id, split)] = nodes(graph, "SplitSigmas")
    assert split["inputs"] == {"sigmas": [sigmas_id, 0], "step": len(model.lists.slow)}

    first, second = sorted(nodes(graph, "SamplerCustomAdvanced"), key=lambda item: item[1]["inputs"]["sigmas"][1])
    assert first[1]["inputs"]["sigmas"] == [split_id, 0] and second[1]["inputs"]["sigmas"] == [split_id, 1]
    assert graph[first[1]["inputs"]["noise"][0]]["class_type"] == "RandomNoise"
    assert graph[first[1]["inputs"]["noise"][0]]["inputs"] == {"noise_seed": 7}
    latent_node = FAMILIES[family].comfyui.empty_latent_node  # FLUX.2: its own 32-channel latent
    assert latent_node == ("EmptyFlux2LatentImage" if family == "flux2" else "EmptySD3LatentImage")
    assert graph[first[1]["inputs"]["latent_image"][0]]["class_type"] == latent_node
    assert graph[second[1]["inputs"]["noise"][0]]["class_type"] == "DisableNoise"
    assert second[1]["inputs"]["latent_image"] == [first[0], 0]  # the second half continues the first's latent

    def loras(sampler) -> list[str]:  # the LoRA files on the guider's model branch, base first
        model_link = graph[sampler["inputs"]["guider"][0]]["inputs"]["model"]
        found = []
        while model_link is not None:
            node = graph[model_link[0]]
            if node["class_type"] == "LoraLoaderModelOnly":
                found.append((node["inputs"]["lora_name"], node["inputs"]["strength_model"]))
            model_link = node["inputs"].get("model")
        return found

    assert loras(first[1]) == [("glance-slow.safetensors", 1.0)]
    assert loras(second[1]) == [("glance-fast.safetensors", 1.0)]
    [(_, size)] = nodes(graph, latent_node)
    assert size["inputs"] == {"width": SIZE, "height": SIZE, "batch_size": 1}
    assert [n["inputs"]["text"] for _, n in nodes(graph, "CLIPTextEncode")][0] == PROMPT  # the training caption
    guidance = {
        "flux": ("FluxGuidance", "BasicGuider"),
        "sd3": (None, "BasicGuider"),  # guidance 1: StableDiffusion3Pipeline runs no CFG
        "qwen_image": ("CFGNorm", "CFGGuider"),
        "chroma": (None, "CFGGuider"),  # CFG 4 against "" (ChromaPipeline: CFG above 1)
        "z_image": (None, "CFGGuider"),  # Z-Image's s = 4 is ComfyUI's cfg 5
        "flux2": (None, "CFGGuider"),  # [klein] base: true CFG 4 against the empty prompt
    }[family]
    assert [g["class_type"] for g in graph.values() if g["class_type"].endswith("Guider")] == [guidance[1]] * 2
    if guidance[0] is not None:
        assert nodes(graph, guidance[0])
    if family == "flux":
        assert nodes(graph, "FluxGuidance")[0][1]["inputs"]["guidance"] == 1.0  # the guidance it trained at
    if family == "flux2":
        assert {n["inputs"]["cfg"] for _, n in nodes(graph, "CFGGuider")} == {4.0} and not nodes(graph, "CFGNorm")
        assert [n["inputs"]["text"] for _, n in nodes(graph, "CLIPTextEncode")] == [PROMPT, ""]
        assert nodes(graph, "CLIPLoader")[0][1]["inputs"] == {"clip_name": "qwen_3_4b.safetensors", "type": "flux2"}
    if family == "qwen_image":
        assert {n["inputs"]["cfg"] for _, n in nodes(graph, "CFGGuider")} == {5.0}
        assert [n["inputs"]["text"] for _, n in nodes(graph, "CLIPTextEncode")] == [PROMPT, " "]
    if family in ("chroma", "z_image"):
        cfg = {"chroma": 4.0, "z_image": 5.0}[family]
        assert {n["inputs"]["cfg"] for _, n in nodes(graph, "CFGGuider")} == {cfg}
        assert [n["inputs"]["text"] for _, n in nodes(graph, "CLIPTextEncode")] == [PROMPT, ""]
    # T5 padded as diffusers pads it: FLUX to 512 (ComfyUI: 256), SD3 to 256 (ComfyUI: 77), Chroma one pad token
    t5 = {"flux": (0, 512), "sd3": (0, 256), "chroma": (1, 0)}.get(family)
    options = [(n["inputs"]["min_padding"], n["inputs"]["min_length"]) for _, n in nodes(graph, "T5TokenizerOptions")]
    assert options == ([t5] if t5 else [])
    if t5:  # between the text encoder loader and every prompt
        [(options_id, _)] = nodes(graph, "T5TokenizerOptions")
        assert {n["inputs"]["clip"][0] for _, n in nodes(graph, "CLIPTextEncode")} == {options_id}


def test_manual_sigmas_text_parses_back_exactly():
    import torch

    sigmas = [1.0, 0.9869786500930786, 0.5, 0.02, 1e-05, 3.0517578125e-05]
    text = manual_sigmas_text(sigmas)
    assert "e" not in text  # ComfyUI's regex reads "1e-05" as 1 and -5
    assert MANUAL_SIGMAS.findall("1e-05") == ["1", "-05"]
    expected = torch.tensor([*sigmas, 0.0], dtype=torch.float32)
    assert torch.equal(manual_sigmas(text), expected)


def test_default_files_and_overrides(tiny, tmp_path):
    run = tiny_run(tiny("flux"), tmp_path)
    args = ["--model-file", "flux1-dev-fp8.safetensors", "--text-encoder", "clip_l.safetensors"]
    result = export(run, tmp_path / "one", *args, "--text-encoder", "t5xxl_fp8_e4m3fn.safetensors", "--vae", "v.sft")
    assert result.exit_code == 0, result.output
    graph = json.loads((tmp_path / "one" / "glance-workflow.json").read_text())
    assert nodes(graph, "UNETLoader")[0][1]["inputs"]["unet_name"] == "flux1-dev-fp8.safetensors"
    loader = nodes(graph, "DualCLIPLoader")[0][1]["inputs"]
    assert loader == {"clip_name1": "clip_l.safetensors", "clip_name2": "t5xxl_fp8_e4m3fn.safetensors", "type": "flux"}
    assert nodes(graph, "VAELoader")[0][1]["inputs"] == {"vae_name": "v.sft"}
    readme = (tmp_path / "one" / "README.md").read_text()
    assert "`flux1-dev-fp8.safetensors` (the base model) | `ComfyUI/models/diffusion_models/`" in readme
    assert "**SplitSigmas step 5**" in readme and "**FluxGuidance 1**" in readme

    sd3 = export(tiny_run(tiny("sd3"), tmp_path), tmp_path / "sd3", "--json")
    summary = json.loads(sd3.stdout)
    assert summary["model_files"] == {
        "model": TINY_MODEL_FILE,
        "text_encoders": ["clip_l.safetensors", "clip_g.safetensors", "t5xxl_fp16.safetensors"],
        "vae": None,  # the checkpoint's own
        "slow_lora": "glance-slow.safetensors",
        "fast_lora": "glance-fast.safetensors",
    }
    assert summary["loras"]["slow"]["alpha"] == 16.0 and summary["loras"]["slow"]["rank"] == 4
    assert sorted(Path(p).name for p in summary["written"]) == sorted(FILES)


# The LoRA files


@pytest.mark.parametrize("family", FAMILIES)
def test_exported_keys_name_linears_of_the_family_and_carry_alpha(tiny, family, tmp_path):
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    from glance.tiny import load_transformer

    model = tiny(family)
    assert export(tiny_run(model, tmp_path), tmp_path / "out").exit_code == 0
    exported = load_file(tmp_path / "out" / "glance-slow.safetensors")
    source = load_file(model.slow / "pytorch_lora_weights.safetensors")
    transformer = load_transformer(model.model)
    modules = set()
    for key in exported:
        module = key.removeprefix("transformer.")
        for suffix in (".lora_A.weight", ".lora_B.weight", ".alpha"):
            module = module.removesuffix(suffix)
        assert key.startswith("transformer.") and module != key
        assert isinstance(transformer.get_submodule(module), torch.nn.Linear), key
        modules.add(module)
    for key, tensor in source.items():  # the trained tensors, untouched
        assert torch.equal(exported[key], tensor) and exported[key].dtype == tensor.dtype
    alphas = {key: tensor for key, tensor in exported.items() if key.endswith(".alpha")}
    assert len(alphas) == len(modules) and {tensor.item() for tensor in alphas.values()} == {16.0}  # 4 x rank 4
    with safe_open(tmp_path / "out" / "glance-slow.safetensors", "pt") as handle:
        header = handle.metadata()
    assert header["glance.phase"] == "slow" and header["glance.rank"] == "4" and header["glance.alpha"] == "16.0"
    assert json.loads(header["glance.timesteps"]) == list(model.lists.slow)
    assert header["glance.base_model"] == str(model.model) and "lora_adapter_metadata" in header


def _strength_check(family: str, model_dir: Path, lora_folder: Path, exported: Path, tmp_path: Path) -> None:
    """ComfyUI's merge of the exported file equals diffusers' fuse_lora of the pair as glance infer loads it."""
    import torch
    from safetensors.torch import load_file, save_file

    from glance.loras import read_lora_file

    pipe = load_pipeline(family, model_dir)
    before = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}
    merged = comfy_merge(before, exported)

    lora = read_lora_file("slow", lora_folder)
    pipe.set_adapters("slow", adapter_weights=lora.load_into(pipe, "slow"))
    pipe.fuse_lora(components=["transformer"], lora_scale=1.0, adapter_names=["slow"])
    pipe.unload_lora_weights()
    fused = pipe.transformer.state_dict()
    changed = [key for key in before if not torch.equal(before[key], fused[key])]
    assert changed, "the LoRA changed no weight"
    for key in before:
        assert torch.allclose(merged[key], fused[key], rtol=1e-5, atol=1e-6), key

    # Without the .alpha tensors ComfyUI scales by 1.0: off from the trained strength by alpha / rank.
    no_alpha = tmp_path / "no-alpha.safetensors"
    save_file({k: v for k, v in load_file(exported).items() if not k.endswith(".alpha")}, no_alpha)
    weak = comfy_merge(before, no_alpha)
    factor = lora.alpha if lora.alpha is not None else json.loads(_header(lora.file))["transformer.lora_alpha"]
    factor /= next(iter(lora.weights.values()))["A"].shape[0]
    assert factor == 4.0
    for key in changed:
        assert not torch.allclose(weak[key], fused[key], rtol=1e-3, atol=1e-6), key
        assert torch.allclose((weak[key] - before[key]) * factor, fused[key] - before[key], rtol=1e-4, atol=1e-6)


def _header(path: Path) -> str:
    from safetensors import safe_open

    with safe_open(path, "pt") as handle:
        return handle.metadata()["lora_adapter_metadata"]


@pytest.mark.parametrize("family", ["sd3", "qwen_image", "chroma", "z_image"])
def test_strength_by_comfyui_rule_equals_diffusers_fuse(tiny, family, tmp_path):
    model = tiny(family)
    assert export(tiny_run(model, tmp_path), tmp_path / "out").exit_code == 0
    _strength_check(family, model.model, model.slow, tmp_path / "out" / "glance-slow.safetensors", tmp_path)


@pytest.mark.slow
def test_strength_of_the_trained_pair(trained_run, tmp_path):
    assert export(trained_run.output, tmp_path / "out").exit_code == 0
    manifest = load_manifest(trained_run.output / MANIFEST_NAME)
    slow = manifest.lora_dir("slow", trained_run.output / MANIFEST_NAME)
    _strength_check("flux", trained_run.model, slow, tmp_path / "out" / "glance-slow.safetensors", tmp_path)
    readme = (tmp_path / "out" / "README.md").read_text()  # where the demo and the export meet
    assert "ComfyUI 0.7.0 or newer" in readme and "shipped shapes model" in readme and "head dimension of 128" in readme


# Replayed: the workflow samples what glance infer samples


def _replay_against_infer(family, model_dir, run, tmp_path, prompt, seed, *, exact=True):
    from glance.comfyui import default_files

    out = tmp_path / "comfyui"
    png_file = default_files(family, str(model_dir)).model  # the file the PNGs' own workflows name
    result = export(run, out, "--prompt", prompt, "--seed", str(seed), "--model-file", png_file)
    assert result.exit_code == 0, result.output
    graph = json.loads((out / "glance-workflow.json").read_text())
    glance = run_infer(
        options_from_manifest(run, prompts=[prompt], seeds=[seed], out=tmp_path / "glance.png", device="cpu")
    ).images[0]

    replayed = replay(graph, load_pipeline(family, model_dir), out, family, approximate_cfg_norm=not exact)
    names = {adapter_name("glance-slow.safetensors"): "slow", adapter_name("glance-fast.safetensors"): "fast"}
    trace = [(sigma, nxt, tuple(names[a] for a in adapters)) for sigma, nxt, adapters in replayed.trace]
    recorded = [(s["sigma"], s["sigma_next"], tuple(s["adapters"])) for s in glance.summary["steps"]]
    assert trace == recorded  # every sigma exactly, the switch after the last slow step
    assert [call["loras"] for call in replayed.calls] == [["glance-slow"], ["glance-fast"]]
    if exact:
        assert np.array_equal(pixels(replayed.image), pixels(glance.image))
    # The PNG glance infer wrote carries this same workflow (its own prompt and seed).
    with Image.open(glance.image) as image:
        assert json.loads(image.text["prompt"]) == graph
    return replayed, glance


@pytest.mark.parametrize("family", ["flux", "sd3", "chroma", "z_image"])
def test_workflow_replays_like_glance_infer(tiny, family, tmp_path):
    model = tiny(family)
    _replay_against_infer(family, model.model, tiny_run(model, tmp_path), tmp_path, "a blue square", 5)


def test_qwen_image_workflow_replays_the_sigmas_and_switch(tiny, tmp_path):
    """Qwen-Image: same sigmas, switch and strength; its true-CFG rescale is ComfyUI's CFGNorm, not diffusers'."""
    model = tiny("qwen_image")
    run = tiny_run(model, tmp_path)
    replayed, _ = _replay_against_infer("qwen_image", model.model, run, tmp_path, "a dot", 2, exact=False)
    assert [(c["true_cfg_scale"], c["negative_prompt"]) for c in replayed.calls] == [(5.0, " ")] * 2


@pytest.mark.slow
def test_trained_pair_workflow_replays_pixel_identical(trained_run, tmp_path):
    _replay_against_infer("flux", trained_run.model, trained_run.output, tmp_path, "a red circle at dusk", 3)


# The workflow in every PNG


def test_every_png_carries_its_workflow(tiny, tmp_path):
    model = tiny("flux")
    run = tiny_run(model, tmp_path)
    result = run_infer(
        options_from_manifest(run, prompts=["one", "two"], seeds=[4], out=tmp_path / "g.png", device="cpu", compare=3)
    )
    for image in result.images:
        for made, kind in ((image, "glance"), (image.base, "base")):
            with Image.open(made.image) as png:
                graph = json.loads(png.text["prompt"])
            record = read_png_parameters(made.image)
            assert record["kind"] == kind
            check_graph(graph)
            assert graph == build_workflow(spec_from_record(record))
            assert nodes(graph, "RandomNoise")[0][1]["inputs"] == {"noise_seed": 4}
            assert nodes(graph, "CLIPTextEncode")[0][1]["inputs"]["text"] == made.prompt
            parsed = manual_sigmas(nodes(graph, "ManualSigmas")[0][1]["inputs"]["sigmas"]).tolist()
            assert parsed == [*record["sigmas"], 0.0]
            has_loras = bool(nodes(graph, "LoraLoaderModelOnly"))
            assert has_loras == (kind == "glance") and bool(nodes(graph, "SplitSigmas")) == (kind == "glance")
        assert len(read_png_parameters(image.base.image)["sigmas"]) == 3


# Bad input: one line, non-zero exit, nothing written


def test_incomplete_run_writes_nothing(tiny, tmp_path):
    run = tiny_run(tiny("flux"), tmp_path)
    manifest = load_manifest(run / MANIFEST_NAME)
    manifest.model_copy(update={"phases": {"slow": manifest.phases["slow"]}}).save(run / MANIFEST_NAME)
    result = export(run, tmp_path / "out")
    assert result.exit_code == 1
    assert result.stderr == (
        f"glance: error: the run in {run} is incomplete: the fast phase has not finished; run `glance train` first\n"
    )
    assert not (tmp_path / "out").exists()


def test_default_files_follow_the_hub_model():
    from glance.comfyui import default_files

    assert default_files("sd3", "stabilityai/stable-diffusion-3-medium-diffusers").model == "sd3_medium.safetensors"
    assert default_files("sd3", "stabilityai/stable-diffusion-3.5-large").model == "sd3.5_large.safetensors"
    assert default_files("flux", "someone/a-flux-finetune").model == "flux1-dev.safetensors"


def test_loras_that_do_not_fit_the_workflows_model_file_are_refused(tiny, tmp_path):
    # A run on a small local model would export a FLUX.1-dev workflow its LoRAs cannot apply to.
    run = tiny_run(tiny("flux"), tmp_path)
    result = CliRunner().invoke(app, ["export", "comfyui", "-o", str(run), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "does not fit black-forest-labs/FLUX.1-dev" in result.stderr and "3072 wide" in result.stderr
    assert "flux1-dev.safetensors: pass --model-file" in result.stderr
    assert not (tmp_path / "out").exists()
    push = CliRunner().invoke(app, ["push", "you/x", "-o", str(run), "--base-model", "black-forest-labs/FLUX.1-dev",
                                    "--dry-run"])  # fmt: skip
    assert push.exit_code == 1 and "does not fit black-forest-labs/FLUX.1-dev" in push.stderr
    assert not (run / "push").exists()


@pytest.mark.parametrize("command", [("export", "comfyui"), ("push", "you/x", "--dry-run")])
def test_no_run_folder_suggests_only_options_the_command_has(tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, [*command, "-o", "nope"])
    assert result.exit_code == 1
    assert result.stderr == "glance: error: no run manifest at nope/glance.json; run `glance train` first, " \
        "or pass -o with the run's folder\n"  # fmt: skip
    assert not (tmp_path / "nope").exists()


def test_existing_folder_needs_force(tiny, tmp_path):
    run = tiny_run(tiny("flux"), tmp_path)
    out = tmp_path / "out"
    assert export(run, out, "--seed", "1").exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    again = export(run, out, "--seed", "1")  # the same files: nothing to do
    assert again.exit_code == 0 and again.stdout.count("up to date") == 4

    other = export(run, out, "--seed", "2")
    assert other.exit_code == 1 and other.stderr.count("\n") == 1
    assert other.stderr.startswith(f"glance: error: {out / 'glance-workflow.json'} exists and differs")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing written, the LoRAs included

    forced = export(run, out, "--seed", "2", "--force")
    assert forced.exit_code == 0
    assert "wrote" in forced.stdout and (out / "glance-workflow.json").read_bytes() != before["glance-workflow.json"]
    assert (out / "glance-slow.safetensors").read_bytes() == before["glance-slow.safetensors"]


def test_unknown_family_and_wrong_file_counts(tiny, tmp_path):
    run = tiny_run(tiny("sd3"), tmp_path)
    data = json.loads((run / MANIFEST_NAME).read_text())
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / MANIFEST_NAME).write_text(json.dumps({**data, "family": "hunyuan_video"}))
    cases = [
        (["-o", str(tmp_path / "bad")], "unknown model family 'hunyuan_video'"),
        (["-o", str(run), "--text-encoder", "t5.safetensors"], "TripleCLIPLoader loads 3 file(s) for sd3"),
        (["-o", str(run), "--vae", "vae.safetensors"], "sd3 takes its VAE from the checkpoint"),
        (["-o", str(tmp_path / "none")], "no run manifest at"),
    ]
    for args, message in cases:
        result = export(tmp_path / "ignored", tmp_path / "out", *args)  # the later -o wins
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith("glance: error: ") and message in result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
        assert not (tmp_path / "out").exists()


def test_lora_with_keys_comfyui_does_not_map_is_refused(tiny, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    model = tiny("flux")
    run = tiny_run(model, tmp_path)
    odd = tmp_path / "odd-slow"
    odd.mkdir()
    tensors = load_file(model.slow / "pytorch_lora_weights.safetensors")
    tensors["transformer.pos_embed.lora_A.weight"] = torch.zeros(4, 8)  # a layer FLUX's ComfyUI map lacks
    tensors["transformer.pos_embed.lora_B.weight"] = torch.zeros(8, 4)
    save_file(tensors, odd / "pytorch_lora_weights.safetensors", metadata={"format": "pt"})
    manifest = load_manifest(run / MANIFEST_NAME)
    phases = {**manifest.phases, "slow": manifest.phases["slow"].model_copy(update={"lora_dir": str(odd)})}
    manifest.model_copy(update={"phases": phases}).save(run / MANIFEST_NAME)
    result = export(run, tmp_path / "out")
    assert result.exit_code == 1
    assert "ComfyUI's flux LoRA key map (comfy/lora.py) has no entry for pos_embed" in result.stderr
    assert not (tmp_path / "out").exists()
