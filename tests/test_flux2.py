"""FLUX.2: [klein] base trained and sampled on a tiny offline model; the flavour, the schedule and guidance per model.

The schedule's expectations come from diffusers' own code (compute_empirical_mu and the scheduler), not glance's.
"""

import json

import numpy as np
import pytest
from support.family_runs import RESOLUTION, STEPS

from glance.families import FAMILIES, GlanceError, model_schedule, resolve_family
from glance.run_plan import TrainSettings, plan_run
from glance.schedule import FAST_INDICES, SLOW_INDICES, base_schedule, default_lists

FLUX2 = FAMILIES["flux2"]
KLEIN_4B, KLEIN_9B, DEV = (
    "black-forest-labs/FLUX.2-klein-base-4B",
    "black-forest-labs/FLUX.2-klein-base-9B",
    "black-forest-labs/FLUX.2-dev",
)


def diffusers_sigmas(seq_len: int, steps: int) -> list[float]:
    """What Flux2KleinPipeline / Flux2Pipeline hand the scheduler at `steps` steps, stepped by diffusers itself."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.flux2.pipeline_flux2 import compute_empirical_mu

    from glance.tiny.common import family_scheduler

    scheduler: FlowMatchEulerDiscreteScheduler = family_scheduler("flux2")
    mu = compute_empirical_mu(image_seq_len=seq_len, num_steps=steps)
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
    return [float(s) for s in scheduler.sigmas[:-1]]


@pytest.mark.parametrize("side", [64, 512, 1024, 1536])
@pytest.mark.parametrize("steps", [4, 10, 50])
def test_schedule_is_diffusers_empirical_mu_schedule(side, steps):
    model = model_schedule(KLEIN_4B, FLUX2)  # a hub id: FLUX.2's shipped settings, an 8x VAE
    seq_len = (side // 16) ** 2
    assert base_schedule(FLUX2, model, side, side, steps) == pytest.approx(diffusers_sigmas(seq_len, steps), abs=1e-7)


def test_lists_come_from_the_50_step_schedule_and_the_mu_depends_on_the_steps():
    from diffusers.pipelines.flux2.pipeline_flux2 import compute_empirical_mu

    model = model_schedule(KLEIN_9B, FLUX2)
    expected = diffusers_sigmas(4096, 50)
    lists = default_lists(FLUX2, model, 1024)
    assert lists.slow_sigmas == pytest.approx([expected[i] for i in SLOW_INDICES], abs=1e-6)
    assert lists.fast_sigmas == pytest.approx([expected[i] for i in FAST_INDICES], abs=1e-6)
    # Below 4300 tokens fewer steps shift more: the 10-step schedule is not the 50-step one's every 5th.
    assert compute_empirical_mu(1024, 10) != compute_empirical_mu(1024, 50)
    ten = base_schedule(FLUX2, model, 512, 512, 10)
    assert ten == pytest.approx(diffusers_sigmas(1024, 10), abs=1e-7)
    assert ten[5] > base_schedule(FLUX2, model, 512, 512, 50)[25] + 1e-2  # both start from sigma 0.5


@pytest.mark.parametrize("resolution", [512, 1024])
def test_glance_schedule_prints_diffusers_50_step_lists(resolution):
    from typer.testing import CliRunner

    from glance.cli import app

    result = CliRunner().invoke(app, ["schedule", "--model", KLEIN_9B, "--resolution", str(resolution)])
    assert result.exit_code == 0, result.output
    printed = {
        line.split()[0]: [float(v) for v in line.split()[1].split(",")]
        for line in result.output.splitlines()
        if line.startswith("--")
    }
    timesteps = [s * 1000 for s in diffusers_sigmas((resolution // 16) ** 2, 50)]
    assert printed["--slow-timesteps"] == pytest.approx([timesteps[i] for i in SLOW_INDICES], abs=1e-4)
    assert printed["--fast-timesteps"] == pytest.approx([timesteps[i] for i in FAST_INDICES], abs=1e-4)
    refused = CliRunner().invoke(app, ["schedule", "--model", "black-forest-labs/FLUX.2-klein-9B"])
    assert refused.exit_code != 0 and "FLUX.2-klein-base-9B" in refused.output


def test_flavour_from_the_model(tmp_path, tiny):
    assert [FLUX2.flavour_for(hub_id) for hub_id in (KLEIN_4B, KLEIN_9B, DEV)] == ["klein-4b", "klein-9b", "dev"]
    assert FLUX2.flavour_for(str(tiny("flux2").model)) == "klein-4b"
    # A local folder: the class and the text encoder's width say which.
    nine = tmp_path / "nine"
    (nine / "text_encoder").mkdir(parents=True)
    (nine / "model_index.json").write_text(json.dumps({"_class_name": "Flux2KleinPipeline", "is_distilled": False}))
    (nine / "text_encoder" / "config.json").write_text(json.dumps({"hidden_size": 4096}))
    assert FLUX2.flavour_for(str(nine)) == "klein-9b"
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "model_index.json").write_text(json.dumps({"_class_name": "Flux2Pipeline"}))
    assert FLUX2.flavour_for(str(dev)) == "dev"
    assert resolve_family(str(dev), None).pipeline_class == "Flux2Pipeline"
    distilled = tmp_path / "distilled"
    distilled.mkdir()
    (distilled / "model_index.json").write_text(json.dumps({"_class_name": "Flux2KleinPipeline", "is_distilled": True}))
    with pytest.raises(GlanceError, match="step-distilled"):
        FLUX2.flavour_for(str(distilled))
    # An unknown hub id is refused rather than trained without a flavour (SimpleTuner would load Mistral-24B).
    with pytest.raises(GlanceError, match="cannot tell whether"):
        FLUX2.flavour_for("someone/flux2-finetune")


def test_hub_ids_resolve_and_the_distilled_klein_is_refused():
    for hub_id in (KLEIN_4B, KLEIN_9B):
        family = resolve_family(hub_id, None)
        assert (family.name, family.pipeline_class, family.recipe.guidance) == ("flux2", "Flux2KleinPipeline", 4.0)
        assert family.recipe.train_guidance is None and family.comfyui.guidance == "cfg"
    dev = resolve_family(DEV, None)
    assert (dev.pipeline_class, dev.recipe.train_guidance) == ("Flux2Pipeline", 1.0)
    assert dev.comfyui.guidance == "flux_guidance"  # embedded guidance, like FLUX.1
    from glance.comfyui import default_files

    nine = default_files("flux2", KLEIN_9B)  # ComfyUI's files of the 9B: its own model and Qwen3-8B
    assert (nine.model, nine.text_encoders) == ("flux-2-klein-base-9b.safetensors", ("qwen_3_8b.safetensors",))
    assert default_files("flux2", KLEIN_4B).text_encoders == ("qwen_3_4b.safetensors",)
    assert default_files("flux2", DEV).model == "flux2_dev_fp8mixed.safetensors"
    for size in ("4B", "9B"):
        with pytest.raises(GlanceError, match=f"--model black-forest-labs/FLUX.2-klein-base-{size}"):
            resolve_family(f"black-forest-labs/FLUX.2-klein-{size}", None)


@pytest.mark.parametrize(("model", "flavour"), [(KLEIN_4B, "klein-4b"), (KLEIN_9B, "klein-9b"), (DEV, "dev")])
def test_configs_always_name_the_flavour(tmp_path, model, flavour):
    from glance.tiny import write_sample_pair

    image = write_sample_pair(tmp_path, size=64)
    plan = plan_run(TrainSettings(image=image, model=model, resolution=1024, output_dir=tmp_path / "out"))
    for config in plan.configs.values():
        assert config.model_family == "flux2" and config.model_flavour == flavour
    assert plan.configs["slow"].flux_guidance_value == (1.0 if flavour == "dev" else None)


def test_simpletuner_trained_on_exactly_the_lists(flux2_run):
    """The sigmas SimpleTuner fed the model, recorded inside it (tests/support/trained_sigmas): all its phase's list."""
    lists = flux2_run.manifest.lists
    assert lists == default_lists(FLUX2, model_schedule(str(flux2_run.model), FLUX2), RESOLUTION)
    for phase in ("slow", "fast"):
        trained = flux2_run.trained_sigmas(phase)
        assert len(trained) == STEPS  # one batch of one image per step
        assert set(trained) <= set(getattr(lists, f"{phase}_sigmas"))
        assert flux2_run.config(phase)["model_flavour"] == "klein-4b"


def test_trained_klein_samples_exactly_the_trained_sigmas(flux2_run, tmp_path):
    from glance.infer import options_from_manifest, run_infer

    options = options_from_manifest(flux2_run.output, prompt="a red circle", out=tmp_path / "k.png", device="cpu")
    result = run_infer(options).images[0]
    lists = flux2_run.manifest.lists
    assert [step.sigma for step in result.trace] == lists.sigmas
    switch = len(lists.slow)
    assert [step.adapters for step in result.trace] == [("slow",)] * switch + [("fast",)] * len(lists.fast)
    assert result.summary["guidance"] == 4.0  # true CFG, against the empty prompt


def test_trained_klein_exports_for_comfyui(flux2_run, tmp_path):
    """SimpleTuner's FLUX.2 targets (double-block attention and the single blocks' fused to_qkv_mlp_proj) all map."""
    from typer.testing import CliRunner

    from glance.cli import app

    out = tmp_path / "comfyui"
    # A tiny model's LoRAs fit no real model's default file: name the tiny one (glance refuses otherwise).
    result = CliRunner().invoke(app, ["export", "comfyui", "-o", str(flux2_run.output), "--out", str(out),
                                      "--model-file", "tiny.safetensors"])  # fmt: skip
    assert result.exit_code == 0, result.output
    graph = json.loads((out / "glance-workflow.json").read_text())
    assert [n["class_type"] for n in graph.values() if n["class_type"].startswith("Empty")] == ["EmptyFlux2LatentImage"]
    from safetensors.torch import load_file

    keys = load_file(out / "glance-slow.safetensors")
    assert any(".attn.to_qkv_mlp_proj." in key for key in keys) and any(".attn.to_q." in key for key in keys)


def test_comfyuis_flux2_key_map_takes_every_linear_of_the_blocks_and_nothing_else():
    """ComfyUI maps FLUX.2's block Linears (comfy/utils.py flux_to_diffusers, "# Flux 2"); the embedders it may
    name otherwise, so a LoRA on them is refused rather than half loaded."""
    import re

    import torch

    from glance.family_flux2 import FLUX2_LORA_MODULES
    from glance.tiny.flux2 import flux2_transformer

    mapped = re.compile("|".join(f"(?:{pattern})" for pattern in FLUX2_LORA_MODULES))
    transformer = flux2_transformer(0, text_width=16, guidance_embeds=False)
    linears = [name for name, module in transformer.named_modules() if isinstance(module, torch.nn.Linear)]
    in_blocks = [name for name in linears if "transformer_blocks." in name]
    assert {n.split(".", 2)[2] for n in in_blocks} >= {"attn.to_qkv_mlp_proj", "attn.to_out", "ff.linear_in"}
    assert [name for name in in_blocks if not mapped.fullmatch(name)] == []
    assert not any(mapped.fullmatch(name) for name in linears if name not in in_blocks)


def test_dev_folder_serves_its_text_encoder_as_the_repo_simpletuner_loads(tmp_path):
    """SimpleTuner loads [dev]'s Mistral and processor from the Hub's Mistral-24B repo: the run serves the model's."""
    from glance.families import FLUX2_DEV_TEXT_ENCODER_REPO
    from glance.phase import phase_launches
    from glance.run_plan import HUB_CACHE_COMMIT, write_configs
    from glance.tiny import write_sample_pair

    model = tmp_path / "dev"
    files = {
        "text_encoder": ("config.json", "model.safetensors"),
        "tokenizer": ("processor_config.json", "tokenizer.json"),
    }
    for part, names in files.items():
        (model / part).mkdir(parents=True)
        for name in names:
            (model / part / name).write_text(f"{part}/{name}")
    (model / "model_index.json").write_text(json.dumps({"_class_name": "Flux2Pipeline"}))
    image = write_sample_pair(tmp_path / "data", size=64)
    settings = TrainSettings(
        image=image, model=str(model), resolution=1024, output_dir=tmp_path / "out", config_dir=tmp_path / "cfg",
        device="cpu",
    )  # fmt: skip
    plan = plan_run(settings)
    assert plan.configs["slow"].model_flavour == "dev"
    write_configs(plan)
    repo = tmp_path / "out" / "hub-cache" / f"models--{FLUX2_DEV_TEXT_ENCODER_REPO.replace('/', '--')}"
    assert (repo / "refs" / "main").read_text() == HUB_CACHE_COMMIT
    snapshot = repo / "snapshots" / HUB_CACHE_COMMIT
    assert {p.name: p.read_text() for p in snapshot.iterdir()} == {
        name: f"{part}/{name}" for part, names in files.items() for name in names
    }
    envs = {launch.phase: launch.env for launch in phase_launches(plan)}
    assert {env["HF_HUB_CACHE"] for env in envs.values()} == {str((tmp_path / "out" / "hub-cache").resolve())}
    assert {env["HF_HUB_OFFLINE"] for env in envs.values()} == {"1"}
    klein = plan_run(settings.model_copy(update={"model": KLEIN_4B}))
    assert klein.text_encoder_parts is None


@pytest.mark.slow
def test_tiny_dev_plans_loads_its_text_encoder_as_simpletuner_does_and_samples_exactly(tmp_path):
    """[dev] without training: its served text encoder loads as SimpleTuner loads it, and glance infer
    steps through the lists with [dev]'s embedded guidance (the tiny Mistral3 + Pixtral processor, built offline)."""
    from transformers import AutoProcessor, Mistral3ForConditionalGeneration

    from glance.families import FLUX2_DEV_TEXT_ENCODER_REPO
    from glance.infer import run_infer
    from glance.infer_options import InferOptions
    from glance.run_plan import write_configs
    from glance.simpletuner import parser_check
    from glance.tiny import build_tiny_model, load_transformer, write_random_lora, write_sample_pair

    model = build_tiny_model("flux2-dev", tmp_path / "dev")
    family = resolve_family(str(model), None)
    assert (family.pipeline_class, family.flavour_for(str(model))) == ("Flux2Pipeline", "dev")
    settings = TrainSettings(
        image=write_sample_pair(tmp_path / "data", size=64), model=str(model), resolution=64,
        output_dir=tmp_path / "out", config_dir=tmp_path / "cfg", device="cpu",
    )  # fmt: skip
    plan = plan_run(settings)
    write_configs(plan)
    assert parser_check(plan.configs["slow"]).model_flavour == "dev"  # SimpleTuner's own parser takes it
    # As SimpleTuner's _load_text_encoder_mistral loads it (flux2/model.py), offline, from the run's Hub cache.
    cache = {"cache_dir": tmp_path / "out" / "hub-cache", "local_files_only": True}
    processor = AutoProcessor.from_pretrained(FLUX2_DEV_TEXT_ENCODER_REPO, **cache)
    encoder = Mistral3ForConditionalGeneration.from_pretrained(FLUX2_DEV_TEXT_ENCODER_REPO, **cache)
    assert type(processor).__name__ == "PixtralProcessor" and encoder.config.text_config.num_hidden_layers == 31

    loras = {
        name: write_random_lora(tmp_path / name, load_transformer(model), "flux2", seed=seed)
        for name, seed in (("slow", 1), ("fast", 2))
    }
    options = InferOptions(
        prompt="a red circle", model=str(model), lists=plan.lists, slow_lora=loras["slow"], fast_lora=loras["fast"],
        out=tmp_path / "dev.png", width=32, height=32, device="cpu",
    )  # fmt: skip
    result = run_infer(options).images[0]
    assert [step.sigma for step in result.trace] == plan.lists.sigmas
    switch = len(plan.lists.slow)
    assert [step.adapters for step in result.trace] == [("slow",)] * switch + [("fast",)] * len(plan.lists.fast)
    assert result.summary["guidance"] == 1.0  # the guidance embedding, at what SimpleTuner trains FLUX.2 with
