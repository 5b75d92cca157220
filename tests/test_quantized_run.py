"""A real two-phase tiny-FLUX run with --quantize int8 --gradient-checkpointing, both phases at once
(--phases parallel), sampled with `glance infer --quantize int8`, made by benchmarks/gpu_check.py
--small (so its logic is tested too)."""

import json
import re
from datetime import datetime

from glance.manifest import PHASES, load_manifest


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


def _debug_log_span(path) -> tuple[datetime, datetime]:
    """The first and the last time SimpleTuner's own debug.log (one per phase) wrote a line."""
    stamps = re.findall(r"^\[RANK \d+\] (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+)", path.read_text(), re.MULTILINE)
    times = [datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f") for stamp in stamps]
    return times[0], times[-1]


def test_parallel_run_overlaps_and_writes_what_sequential_writes(gpu_check_run):
    from glance.run_plan import TrainSettings, plan_run

    work = gpu_check_run.workdir
    run = work / "int8"
    assert gpu_check_run.stages["train_int8"]["phases_line"] == "phases: both at once (--phases parallel, on the CPU)"
    # Both phases were in SimpleTuner at the same time: each started before the other finished.
    spans = {phase: _debug_log_span(run / f"simpletuner-{phase}" / "debug.log") for phase in PHASES}
    assert spans["slow"][0] < spans["fast"][1] and spans["fast"][0] < spans["slow"][1], spans
    overlap = min(spans["slow"][1], spans["fast"][1]) - max(spans["slow"][0], spans["fast"][0])
    assert overlap.total_seconds() > 0.5 * min((end - start).total_seconds() for start, end in spans.values())
    # Each phase its own files; the run folder holds what a sequential run's does.
    for phase in PHASES:
        assert (run / f"glance-{phase}" / "pytorch_lora_weights.safetensors").is_file()
        other = "fast" if phase == "slow" else "slow"
        log = (run / f"glance-{phase}.log").read_text()  # its own SimpleTuner's output only
        assert f"config/glance-{phase}.json" in log and f"config/glance-{other}.json" not in log
        assert any((run / f"simpletuner-{phase}" / "cache").rglob("*.pt"))
    names = sorted(p.name for p in (work / "int8-config").iterdir())
    assert names == ["glance-fast.json", "glance-slow.json", "multidatabackend-fast.json", "multidatabackend-slow.json"]
    # The same inputs as one after the other: a later sequential run finds both phases up to date.
    settings = TrainSettings(
        image=work / "data" / "glance.png", model=str(work / "tiny-flux"), resolution=64, steps=3, device="cpu",
        output_dir=run, config_dir=work / "int8-config", quantize="int8", gradient_checkpointing=True,
        phases="sequential",
    )  # fmt: skip
    plan = plan_run(settings)
    manifest = load_manifest(run / "glance.json")
    assert manifest.complete
    assert {p: manifest.phases[p].inputs_sha256 for p in PHASES} == {p: plan.inputs_sha256(p) for p in PHASES}
