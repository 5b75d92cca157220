"""Chroma and Z-Image end to end on their tiny models: trained through the real SimpleTuner on exactly
glance's lists (read from the batches SimpleTuner fed the model), sampled on them by `glance infer`, and
carried by the card's diffusers snippet and the ComfyUI export with the same guidance meaning.
Also Qwen-Image-2512 and the new hub ids, offline.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from support.family_runs import run_glance
from typer.testing import CliRunner

from glance.card import diffusers_snippet
from glance.cli import app
from glance.families import FAMILIES, ModelSchedule, model_schedule, resolve_family
from glance.memory.plans import plan_sampling, plan_training
from glance.memory.sizes import KNOWN_SIZES, model_sizes
from glance.schedule import BASE_STEPS, base_schedule, default_lists

RUNS = {"chroma": "chroma_run", "z_image": "z_image_run"}
NEW_HUB_IDS = {"lodestones/Chroma1-HD": "chroma", "Tongyi-MAI/Z-Image": "z_image", "Qwen/Qwen-Image-2512": "qwen_image"}


def pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


# Trained for real, once per family


@pytest.mark.parametrize("family", sorted(RUNS))
def test_simpletuner_trained_on_exactly_the_lists(family, request):
    """The sigmas of every batch SimpleTuner fed the model, after the family's own prepare_batch, are the list's.

    Chroma's prepare_batch squares them away (0.95 -> 0.9975) unless the uniform schedule is on: without
    glance's flow_use_uniform_schedule no fast-phase sigma (all in (0, 1)) would be in the list.
    """
    run = request.getfixturevalue(RUNS[family])
    manifest = run.manifest
    assert manifest.complete and manifest.family == family  # detected from model_index.json
    lists = manifest.lists
    for phase, allowed in (("slow", lists.slow_sigmas), ("fast", lists.fast_sigmas)):
        trained = run.trained_sigmas(phase)
        assert len(trained) == manifest.steps, trained  # one sigma per step (batch size 1)
        assert set(trained) <= set(allowed), f"{phase}: trained on {trained}, the list is {allowed}"


def test_phase_configs_say_what_the_family_needs(chroma_run, z_image_run):
    for phase in ("slow", "fast"):
        chroma, z_image = chroma_run.config(phase), z_image_run.config(phase)
        assert chroma["model_family"] == "chroma" and chroma["flow_use_uniform_schedule"] is True
        assert "model_flavour" not in chroma
        # Z-Image: the base flavour, never a turbo one (SimpleTuner would download a helper LoRA for it).
        assert z_image["model_family"] == "z_image" and z_image["model_flavour"] == "base"
        assert z_image["disable_assistant_lora"] is True


@pytest.mark.parametrize("family", sorted(RUNS))
def test_infer_steps_through_the_trained_lists_with_one_switch(family, request):
    run = request.getfixturevalue(RUNS[family])
    result = run_glance("infer", "a red circle", "--device", "cpu", "--out", "infer.png", "--json", cwd=run.root)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(result.stdout)["images"][0]["record"]
    lists = run.manifest.lists
    assert [step["sigma"] for step in record["steps"]] == lists.sigmas
    adapters = [tuple(step["adapters"]) for step in record["steps"]]
    assert adapters == [("slow",)] * len(lists.slow) + [("fast",)] * len(lists.fast)
    assert record["guidance"] == FAMILIES[family].recipe.guidance


@pytest.mark.parametrize("family", sorted(RUNS))
def test_card_snippet_samples_like_glance_infer(family, request, tmp_path):
    """The push card's plain diffusers code (guidance as the recipe means it) gives `glance infer`'s pixels."""
    run = request.getfixturevalue(RUNS[family])
    prompt = "a blue square"
    out = tmp_path / "g.png"
    result = run_glance("infer", prompt, "--device", "cpu", "--seed", "3", "--out", str(out), cwd=run.root)
    assert result.returncode == 0, result.stderr[-3000:]
    snippet = diffusers_snippet(run.manifest, str(run.output), str(run.model), prompt, seed=3)
    assert f"guidance_scale={FAMILIES[family].recipe.guidance!r}" in snippet
    env = dict(os.environ, HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert np.array_equal(pixels(tmp_path / "glance.png"), pixels(out))


@pytest.mark.parametrize("family", sorted(RUNS))
def test_trained_pair_exports_for_comfyui(family, request, tmp_path):
    """Every trained LoRA key is in ComfyUI's key map for the family; the guidance means what diffusers' does."""
    run = request.getfixturevalue(RUNS[family])
    out = tmp_path / "comfyui"
    # A tiny model's LoRAs fit no real model's default file: name the tiny one (glance refuses otherwise).
    result = CliRunner().invoke(app, ["export", "comfyui", "-o", str(run.output), "--out", str(out),
                                      "--model-file", "tiny.safetensors"])  # fmt: skip
    assert result.exit_code == 0, result.output
    graph = json.loads((out / "glance-workflow.json").read_text())
    guiders = [node for node in graph.values() if node["class_type"] == "CFGGuider"]
    s = FAMILIES[family].recipe.guidance
    # ChromaPipeline: CFG at s above 1; ZImagePipeline: pos + s * (pos - neg) above 0, ComfyUI's cfg s + 1.
    assert {g["inputs"]["cfg"] for g in guiders} == {s + 1 if family == "z_image" else s} and len(guiders) == 2
    options = [n["inputs"] for n in graph.values() if n["class_type"] == "T5TokenizerOptions"]
    assert options == ([{"clip": options[0]["clip"], "min_padding": 1, "min_length": 0}] if family == "chroma" else [])
    readme = (out / "README.md").read_text()
    assert "ComfyUI 0.7.0 or newer" in readme


# Offline facts of the hub ids


@pytest.mark.parametrize("model", sorted(NEW_HUB_IDS))
def test_schedule_prints_the_lists_of_a_hub_id_offline(model):
    result = CliRunner().invoke(app, ["schedule", "--model", model])
    assert result.exit_code == 0, result.output
    family = FAMILIES[NEW_HUB_IDS[model]]
    assert resolve_family(model, None) is family
    lists = default_lists(family, model_schedule(model, family), 1024)
    assert f"({family.name}) at 1024x1024" in result.output
    assert f"--slow-timesteps {','.join(repr(float(v)) for v in lists.slow)}" in result.output


def test_qwen_image_2512_is_qwen_image():
    qwen = FAMILIES["qwen_image"]
    assert default_lists(qwen, model_schedule("Qwen/Qwen-Image-2512", qwen), 1024) == default_lists(
        qwen, model_schedule("Qwen/Qwen-Image", qwen), 1024
    )
    assert qwen.flavour_for("Qwen/Qwen-Image-2512") is None  # v2.0 is on SimpleTuner's assistant-LoRA list
    assert qwen.comfyui.model_files["Qwen/Qwen-Image-2512"] == "qwen_image_2512_bf16.safetensors"


def test_z_image_schedule_is_the_pipelines_own():
    """ZImagePipeline seeds torch.linspace(1, 1/N, N) and its scheduler shifts statically by 6 (mu is ignored)."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.z_image.pipeline_z_image import get_default_z_image_sigmas

    family = FAMILIES["z_image"]
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, **family.scheduler.__dict__)
    scheduler.set_timesteps(sigmas=get_default_z_image_sigmas(BASE_STEPS), mu=0.8, device=torch.device("cpu"))
    theirs = scheduler.sigmas[:-1].tolist()
    assert base_schedule(family, ModelSchedule(family.scheduler, 8), 1024, 1024) == pytest.approx(theirs, abs=1e-7)
    assert base_schedule(family, ModelSchedule(family.scheduler, 8), 512, 512) == pytest.approx(theirs, abs=1e-7)


@pytest.mark.parametrize("model", ["lodestones/Chroma1-HD", "Tongyi-MAI/Z-Image"])
def test_memory_plans_use_the_models_real_sizes(model):
    family = FAMILIES[NEW_HUB_IDS[model]]
    sizes = model_sizes(model, family)
    assert sizes.source == f"known size of {model}"
    flux = KNOWN_SIZES["black-forest-labs/FLUX.1-dev"]
    levels = ["none", "int8", "int4"]
    for card in (16, 24, 48):
        ours = plan_training(sizes, family=family.name, resolution=1024, rank=16, cuda=True, gpu_memory=card)
        theirs = plan_training(flux, family="flux", resolution=1024, rank=16, cuda=True, gpu_memory=card)
        assert levels.index(ours.quantize) <= levels.index(theirs.quantize)  # both are smaller than FLUX.1-dev
        sampling = plan_sampling(sizes, device="cuda", width=1024, height=1024, gpu_memory=card)
        assert sampling.fits


def test_hub_ids_are_detected_and_a_wrong_family_refused():
    from glance.families import GlanceError

    for model, family in NEW_HUB_IDS.items():
        assert resolve_family(model, None).name == family
    with pytest.raises(GlanceError, match="does not match lodestones/Chroma1-HD, which is a chroma model"):
        resolve_family("lodestones/Chroma1-HD", "z_image")
