"""The memory plan: sizes read from the model's files, the estimate, the plan each card gets, and the
settings it writes (which SimpleTuner's own parser must accept)."""

import json
import os
import re
import sys
from pathlib import Path

import pytest
from support.fake_gpus import fake_gpus
from typer.testing import CliRunner

from glance.cli import app
from glance.families import FAMILIES, GlanceError
from glance.memory.estimates import MEASURED_SAMPLE_GIB, MEASURED_TRAIN_GIB, sampling_stages, training_stages
from glance.memory.gpu import parse_nvidia_smi
from glance.memory.plans import TrainingPlan, oom_advice, plan_sampling, plan_training
from glance.memory.sizes import KNOWN_SIZES, model_sizes, read_model_sizes
from glance.run_plan import TrainSettings, plan_run
from glance.simpletuner import parser_check
from glance.tiny import write_sample_pair

MODELS = {
    "FLUX.1-dev": ("black-forest-labs/FLUX.1-dev", "flux"),
    "Qwen-Image": ("Qwen/Qwen-Image", "qwen_image"),
    "SD3.5-large": ("stabilityai/stable-diffusion-3.5-large", "sd3"),
    "SD3-medium": ("stabilityai/stable-diffusion-3-medium-diffusers", "sd3"),
    "FLUX.2-klein-4B": ("black-forest-labs/FLUX.2-klein-base-4B", "flux2"),
    "FLUX.2-klein-9B": ("black-forest-labs/FLUX.2-klein-base-9B", "flux2"),
    "FLUX.2-dev": ("black-forest-labs/FLUX.2-dev", "flux2"),
}
NO_FIT = None

# (model, card GB) -> (quantization, gradient checkpointing) of the training plan, at 1024 px and the family's rank.
TRAINING_PLANS = {
    ("FLUX.1-dev", 12): ("int4", True),
    ("FLUX.1-dev", 16): ("int4", True),
    ("FLUX.1-dev", 24): ("int8", True),
    ("FLUX.1-dev", 48): ("none", True),
    ("FLUX.1-dev", 80): ("none", False),
    ("Qwen-Image", 12): NO_FIT,
    ("Qwen-Image", 16): ("int4", True),
    ("Qwen-Image", 24): ("int4", True),
    ("Qwen-Image", 48): ("none", True),
    ("Qwen-Image", 80): ("none", True),
    ("SD3.5-large", 12): ("int8", True),
    ("SD3.5-large", 16): ("int8", True),
    ("SD3.5-large", 24): ("none", True),
    ("SD3.5-large", 48): ("none", False),
    ("SD3.5-large", 80): ("none", False),
    ("SD3-medium", 12): ("int8", True),
    ("SD3-medium", 16): ("none", False),
    ("SD3-medium", 24): ("none", False),
    ("SD3-medium", 48): ("none", False),
    ("SD3-medium", 80): ("none", False),
    ("FLUX.2-klein-4B", 12): ("none", True),
    ("FLUX.2-klein-4B", 24): ("none", True),
    ("FLUX.2-klein-4B", 48): ("none", False),
    ("FLUX.2-klein-9B", 12): ("int4", True),
    ("FLUX.2-klein-9B", 16): ("int8", True),
    ("FLUX.2-klein-9B", 24): ("none", True),
    ("FLUX.2-klein-9B", 80): ("none", False),
    ("FLUX.2-dev", 24): NO_FIT,  # 32 B transformer: int4 needs a 32 GB card, int8 48 GB
    ("FLUX.2-dev", 32): ("int4", True),
    ("FLUX.2-dev", 48): ("int8", True),
    ("FLUX.2-dev", 80): ("none", True),
}
# (model, card GB) -> (quantization, model CPU offload) of the sampling plan at 1024x1024.
SAMPLING_PLANS = {
    ("FLUX.1-dev", 12): ("int4", True),
    ("FLUX.1-dev", 16): ("int8", True),
    ("FLUX.1-dev", 24): ("int8", False),
    ("FLUX.1-dev", 48): ("none", False),
    ("FLUX.1-dev", 80): ("none", False),
    ("Qwen-Image", 12): ("int4", True),
    ("Qwen-Image", 16): ("int4", True),
    ("Qwen-Image", 24): ("int8", True),
    ("Qwen-Image", 48): ("none", True),
    ("Qwen-Image", 80): ("none", False),
    ("SD3.5-large", 12): ("int8", True),
    ("SD3.5-large", 16): ("int8", True),
    ("SD3.5-large", 24): ("none", True),
    ("SD3.5-large", 48): ("none", False),
    ("SD3.5-large", 80): ("none", False),
    ("SD3-medium", 12): ("none", True),
    ("SD3-medium", 16): ("none", True),
    ("SD3-medium", 24): ("none", False),
    ("SD3-medium", 48): ("none", False),
    ("SD3-medium", 80): ("none", False),
    ("FLUX.2-klein-4B", 12): ("none", True),
    ("FLUX.2-klein-4B", 24): ("none", False),
    ("FLUX.2-klein-9B", 12): ("int8", True),
    ("FLUX.2-klein-9B", 24): ("none", True),
    ("FLUX.2-klein-9B", 48): ("none", False),
    ("FLUX.2-dev", 32): ("int4", True),
    ("FLUX.2-dev", 48): ("int8", True),
    ("FLUX.2-dev", 80): ("none", True),
}


def run_cli(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize(("name", "card"), sorted(TRAINING_PLANS))
def test_training_plan_per_card(name, card):
    model, family = MODELS[name]
    expected = TRAINING_PLANS[(name, card)]
    rank = FAMILIES[family].recipe.rank

    def plan():
        return plan_training(KNOWN_SIZES[model], family=family, resolution=1024, rank=rank, cuda=True, gpu_memory=card)

    if expected is NO_FIT:
        with pytest.raises(GlanceError, match=rf"no training plan fits {card}\.0 GiB.*needs an estimated"):
            plan()
        return
    chosen = plan()
    assert (chosen.quantize, chosen.gradient_checkpointing) == expected
    assert chosen.fits and chosen.estimate_gib <= 0.95 * card
    assert f"of {card}.0 GiB" in chosen.describe()


@pytest.mark.parametrize(("name", "card"), sorted(SAMPLING_PLANS))
def test_sampling_plan_per_card(name, card):
    model, family = MODELS[name]
    chosen = plan_sampling(KNOWN_SIZES[model], device="cuda", width=1024, height=1024, gpu_memory=card)
    assert (chosen.quantize, chosen.cpu_offload) == SAMPLING_PLANS[(name, card)]
    assert chosen.fits
    if chosen.quantize != "none":  # the large text encoder is quantized with the transformer, never below int8
        assert chosen.text_encoder_quantize == "int8"
        assert chosen.large_text_encoder == max(
            KNOWN_SIZES[model].text_encoder_params, key=KNOWN_SIZES[model].text_encoder_params.get
        )


def test_estimate_reproduces_the_measured_points():
    """FACTS.md, one H100: 11.90 B FLUX-sized, rank 16, 1024 px, bf16, SimpleTuner's default checkpointing."""
    measured = KNOWN_SIZES["black-forest-labs/FLUX.1-dev"].model_copy(update={"transformer_params": 11_900_000_000})
    stages = training_stages(
        measured, family="flux", resolution=1024, rank=16, quantize="none", gradient_checkpointing=True
    )
    assert stages["training"] == pytest.approx(MEASURED_TRAIN_GIB)
    # Sampling was measured as torch's max allocated (no CUDA context) with narrow text encoders.
    narrow = measured.model_copy(update={"text_encoder_params": {"text_encoder": 0}})
    sampling = sampling_stages(
        narrow, width=1024, height=1024, rank=16, quantize="none", text_encoder_quantize="none", cpu_offload=False
    )
    assert sampling["sampling"] - 0.5 == pytest.approx(MEASURED_SAMPLE_GIB)


def test_estimate_moves_the_right_way():
    sizes = KNOWN_SIZES["black-forest-labs/FLUX.1-dev"]

    def training(**change):
        settings = dict(family="flux", resolution=1024, rank=16, quantize="none", gradient_checkpointing=True)
        return training_stages(sizes, **{**settings, **change})["training"]

    assert training(quantize="int4") < training(quantize="int8") < training() < training(gradient_checkpointing=False)
    assert training(resolution=512) < training() < training(resolution=1536)
    assert training(rank=4) < training() < training(rank=64)
    # Quantizing on the GPU first holds the whole bf16 transformer there.
    assert (
        training_stages(sizes, family="flux", resolution=1024, rank=16, quantize="int8", gradient_checkpointing=True)[
            "quantizing"
        ]
        > 22
    )


def test_cpu_changes_nothing_unless_asked(tmp_path, monkeypatch):
    write_sample_pair(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    config = plan_run(TrainSettings(device="cpu")).configs["slow"].to_json()
    assert "base_model_precision" not in config and "quantize_via" not in config
    assert config["gradient_checkpointing"] is True  # SimpleTuner 4.10.1's own default, now written out
    asked = plan_run(TrainSettings(device="cpu", quantize="int8")).configs["slow"].to_json()
    assert asked["base_model_precision"] == "int8-quanto" and asked["mixed_precision"] == "no"
    with pytest.raises(GlanceError, match="--gpu-memory plans for a GPU"):
        plan_run(TrainSettings(device="cpu", gpu_memory=24))
    sampling = plan_sampling(KNOWN_SIZES["black-forest-labs/FLUX.1-dev"], device="cpu", width=64, height=64)
    assert sampling.quantize == "none" and not sampling.cpu_offload


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    write_sample_pair(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_gpu_memory_24_plans_int8_and_80_plans_bf16(workdir):
    # No --check: that would download FLUX.1-dev first (glance/hub.py); the parser runs on the plan below.
    result = run_cli("configs", "--device", "cuda", "--gpu-memory", "24")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("memory plan: int8, gradient checkpointing")
    written = json.loads((workdir / "config/glance-slow.json").read_text())
    assert written["base_model_precision"] == "int8-quanto" and written["gradient_checkpointing"] is True
    assert written["quantize_via"] == "cpu"  # the bf16 FLUX (22 GiB) cannot go to a 24 GB card to be quantized there
    parsed = parser_check(plan_run(TrainSettings(device="cuda", gpu_memory=24)).configs["slow"])
    assert parsed.base_model_precision == "int8-quanto" and parsed.quantize_via == "cpu"

    plan = plan_run(TrainSettings(device="cuda", gpu_memory=80))
    assert (plan.memory.quantize, plan.memory.gradient_checkpointing) == ("none", False)
    config = plan.configs["slow"].to_json()
    assert "base_model_precision" not in config and config["gradient_checkpointing"] is False


@pytest.mark.parametrize("quantize", ["int8", "int4", "fp8"])
def test_each_quantization_passes_simpletuners_parser(workdir, quantize):
    plan = plan_run(TrainSettings(device="cuda", gpu_memory=80, quantize=quantize, gradient_checkpointing=True))
    parsed = parser_check(plan.configs["slow"])
    assert parsed.base_model_precision == f"{quantize}-quanto"
    assert parsed.gradient_checkpointing is True


def test_no_gradient_checkpointing_reaches_simpletuner(workdir):
    plan = plan_run(TrainSettings(device="cuda", gpu_memory=48, gradient_checkpointing=False))
    assert plan.memory.quantize == "int4"  # without checkpointing bf16 needs ~60 GiB, int8 ~49: quantize further
    parsed = parser_check(plan.configs["slow"])
    assert parsed.gradient_checkpointing is False and parsed.base_model_precision == "int4-quanto"


def test_a_small_card_quantizes_the_text_encoder_on_the_cpu(workdir):
    plan = plan_run(TrainSettings(model="Qwen/Qwen-Image", device="cuda", gpu_memory=16))
    config = plan.configs["slow"].to_json()
    assert config["base_model_precision"] == "int4-quanto"
    assert config["text_encoder_1_precision"] == "int8-quanto"  # Qwen2.5-VL (16 GB in bf16) while caching
    assert config["quantize_via"] == "cpu"
    parsed = parser_check(plan.configs["slow"])
    assert parsed.text_encoder_1_precision == "int8-quanto" and parsed.quantize_via == "cpu"


def test_nothing_fits_is_one_line_and_writes_nothing(workdir):
    result = run_cli("configs", "--model", "Qwen/Qwen-Image", "--device", "cuda", "--gpu-memory", "12")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("glance: error: no training plan fits 12.0 GiB")
    assert "needs an estimated 14.3 GiB; pass --quantize int4 --gradient-checkpointing" in lines[0]
    assert not (workdir / "config").exists() and not (workdir / "output").exists()
    # Asked for explicitly, the smallest plan is written, with a line saying it does not fit.
    result = run_cli(
        "configs", "--model", "Qwen/Qwen-Image", "--device", "cuda", "--gpu-memory", "12", "--quantize", "int4"
    )
    assert result.exit_code == 0 and "does not fit" in result.stdout.splitlines()[0]


def test_dry_run_shows_the_plan(workdir):
    result = run_cli("train", "--device", "cuda", "--gpu-memory", "16", "--dry-run")
    assert result.exit_code == 0, result.output
    # The peak is the caching stage: T5-XXL in bf16 (9 GiB) with the VAE encoding 1024 px.
    lines = result.stdout.splitlines()
    assert lines[0].startswith("model: black-forest-labs/FLUX.1-dev")  # looked up, not downloaded
    assert lines[1] == (
        "memory plan: int4, gradient checkpointing, quantized on the CPU: estimated peak 11.8 GiB of 16.0 GiB "
        "(as given by --gpu-memory)"
    )


def test_sizes_from_safetensors_headers(tiny, tmp_path):
    import torch

    from glance.tiny import load_transformer

    model = tiny("flux").model
    sizes = read_model_sizes(model)
    transformer = load_transformer(model)
    assert sizes.transformer_params == sum(p.numel() for p in transformer.parameters())
    assert sizes.blocks == 2 and sizes.width == 32  # 1 + 1 blocks, 2 heads of 16
    assert set(sizes.text_encoder_params) == {"text_encoder", "text_encoder_2"}
    assert "safetensors headers" in sizes.source

    # A sharded checkpoint (read through its index) counts the same.
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    for part in model.iterdir():
        if part.name != "transformer":
            (sharded / part.name).symlink_to(part)
    transformer.to(torch.float32).save_pretrained(sharded / "transformer", max_shard_size="20KB")
    assert len(list((sharded / "transformer").glob("*.safetensors"))) > 1
    assert read_model_sizes(sharded).transformer_params == sizes.transformer_params


def test_sizes_from_the_hub_cache_else_the_table(tiny, tmp_path, monkeypatch):
    snapshot = tmp_path / "hub" / "models--someone--tiny-flux" / "snapshots" / "abc123"
    snapshot.parent.mkdir(parents=True)
    os.symlink(tiny("flux").model, snapshot)
    (tmp_path / "hub" / "models--someone--tiny-flux" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--tiny-flux" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))  # read at import
    assert model_sizes("someone/tiny-flux", FAMILIES["flux"]).source == f"safetensors headers in {snapshot}"
    flux = model_sizes("black-forest-labs/FLUX.1-dev", FAMILIES["flux"])  # not cached here: the table
    assert flux.source == "known size of black-forest-labs/FLUX.1-dev" and flux.large_text_encoder == "text_encoder_2"
    other = model_sizes("someone/other-flux", FAMILIES["flux"])
    assert "stand-in for someone/other-flux" in other.source


def test_nvidia_smi_output():
    text = "NVIDIA H100 80GB HBM3, 81559\nNVIDIA GeForce RTX 4090, 24564\n"
    assert parse_nvidia_smi(text).memory_gib == 24.0  # the smallest card decides
    assert parse_nvidia_smi(text, visible="0").name == "NVIDIA H100 80GB HBM3"
    assert parse_nvidia_smi(text, visible="0").memory_gib == 79.6
    assert parse_nvidia_smi("") is None


def test_detected_gpu_plans_without_gpu_memory(workdir, monkeypatch):
    """nvidia-smi is asked (torch is not); a stand-in reports a 24 GB card."""
    fake_gpus(workdir, monkeypatch, "NVIDIA GeForce RTX 4090, 24564")
    plan = plan_run(TrainSettings(device="cuda")).memory
    assert plan.quantize == "int8" and plan.gpu.name == "NVIDIA GeForce RTX 4090"
    assert "of 24.0 GiB (NVIDIA GeForce RTX 4090)" in plan.describe()


def test_out_of_memory_names_the_next_plan():
    plan = TrainingPlan(quantize="none", gradient_checkpointing=False, estimate_gib=60.5)
    advice = oom_advice("...\ntorch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n", plan)
    assert advice == (
        "the GPU ran out of memory with bf16, no gradient checkpointing, estimated 60.5 GiB; "
        "try --quantize none --gradient-checkpointing"
    )
    last = TrainingPlan(quantize="int4", gradient_checkpointing=True)
    assert "no lighter plan is left" in oom_advice("CUDA out of memory", last)
    assert oom_advice("ValueError: something else", plan) is None


def test_sampling_out_of_memory_is_one_line(tiny, tmp_path):
    from glance.infer import _out_of_memory_advice
    from glance.infer_options import InferOptions

    class OutOfMemoryError(RuntimeError):  # torch.OutOfMemoryError's name and message
        pass

    @_out_of_memory_advice
    def sample(options):
        raise OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")

    model = tiny("flux")
    options = InferOptions(
        prompt="p", model=str(model.model), lists=model.lists, slow_lora=model.slow, fast_lora=model.fast,
        gpu_memory=24, quantize="int8",
    )  # fmt: skip
    expected = r"^the GPU ran out of memory sampling with int8.*; try --quantize int8 --cpu-offload$"
    with pytest.raises(GlanceError, match=expected):
        sample(options)


SUPPORT = Path(__file__).parent / "support"


def test_training_out_of_memory_ends_with_the_next_plan(workdir, monkeypatch, tiny):
    bin_dir = workdir / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "simpletuner"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{SUPPORT / "fake_simpletuner.py"}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SIMPLETUNER_CALLS", str(workdir / "calls.jsonl"))
    monkeypatch.setenv("FAKE_SIMPLETUNER_MODE", "crash")  # prints "CUDA out of memory (pretend)"
    monkeypatch.delenv("GLANCE_SIMPLETUNER", raising=False)
    # A local model (the tiny Flux): FLUX.1-dev's hub id would have to be downloaded first.
    result = run_cli(
        "train", "--model", str(tiny("flux").model), "--resolution", "64",
        "--device", "cuda", "--gpu-memory", "80", "--steps", "2", "--phases", "sequential",
    )  # fmt: skip
    assert result.exit_code == 1
    error = [line for line in result.stderr.splitlines() if line.startswith("glance: error:")]
    assert len(error) == 1
    assert re.search(
        r"the GPU ran out of memory with bf16, no gradient checkpointing, estimated [0-9.]+ GiB; "
        r"try --quantize none --gradient-checkpointing$",
        error[0],
    ), error[0]
