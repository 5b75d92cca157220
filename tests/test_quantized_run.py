"""A real two-phase tiny-FLUX run with --quantize int8 --gradient-checkpointing, sampled with
`glance infer --quantize int8`, made by benchmarks/gpu_check.py --small (so its logic is tested too)."""

import json

from glance.manifest import load_manifest


def test_int8_checkpointed_run_trains_both_phases(gpu_check_run):
    from safetensors import safe_open

    train = gpu_check_run.stages["train_int8"]
    assert train["exit_code"] == 0 and train["phases_done"] == ["fast", "slow"]
    run = gpu_check_run.workdir / "int8"
    manifest = load_manifest(run / "glance.json")
    assert manifest.quantize == "int8" and manifest.gradient_checkpointing is True
    assert manifest.memory_plan == "memory plan: int8, gradient checkpointing on the CPU (no GPU to plan for)"
    for phase in ("slow", "fast"):
        used = json.loads((run / f"glance-{phase}" / "simpletuner_config.json").read_text())
        assert used["base_model_precision"] == "int8-quanto" and used["gradient_checkpointing"] is True
        with safe_open(run / f"glance-{phase}" / "pytorch_lora_weights.safetensors", "pt") as handle:
            keys = set(handle.keys())
        # The LoRA of a quantized base has the plain diffusers keys of any other run (FACTS.md).
        assert keys and all(k.startswith("transformer.") and (".lora_A." in k or ".lora_B." in k) for k in keys)
    log = (gpu_check_run.workdir / "int8.log").read_text()
    assert "Quantising FluxTransformer2DModel. Using int8-quanto" in log


def test_int8_loras_sample_with_int8(gpu_check_run):
    sample = gpu_check_run.stages["infer_int8"]
    assert sample["exit_code"] == 0, sample["last_lines"]
    assert sample["quantize"] == "int8"
    assert sample["adapters"] == [["slow"]] * 5 + [["fast"]] * 5
    manifest = load_manifest(gpu_check_run.workdir / "int8" / "glance.json")
    assert sample["sigmas"] == manifest.lists.sigmas
    assert (gpu_check_run.workdir / "int8.png").is_file()


def test_gpu_check_reports_time_per_step_against_the_baseline(gpu_check_run):
    int8, bf16 = gpu_check_run.stages["train_int8"], gpu_check_run.stages["train_bf16"]
    assert bf16["exit_code"] == 0 and bf16["phases_done"] == ["slow"]
    assert bf16["plan"] == {
        "quantize": "none",
        "gradient_checkpointing": False,
        "memory_plan": "memory plan: fp32, no gradient checkpointing on the CPU (no GPU to plan for)",
    }
    assert int8["steps_seen"] == {"slow": 3, "fast": 3} and bf16["steps_seen"] == {"slow": 3}
    assert int8["s_per_step"] > 0 and bf16["s_per_step"] > 0
    summary = gpu_check_run.stages["summary"]
    assert summary["s_per_step"] == round(int8["s_per_step"] / bf16["s_per_step"], 2)
    assert summary["peak_gpu"] is None and int8["peak_gpu_gib"] is None  # no nvidia-smi on this machine
