"""`glance train`: real SimpleTuner runs on the shipped shapes model, and the failure paths with a stand-in."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.fake_gpus import fake_gpus
from support.fake_terminal import FakeTerminal
from typer.testing import CliRunner

from glance.cli import app
from glance.manifest import load_manifest
from glance.tiny import write_sample_pair

SUPPORT = Path(__file__).parent / "support"


def run_cli(*args: str):
    return CliRunner().invoke(app, list(args))


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- the real thing ---------------------------------------------------------------------------


def test_real_run_trains_both_phases(trained_run):
    from safetensors import safe_open

    run = trained_run
    manifest = load_manifest(run.output / "glance.json")
    assert manifest.complete and manifest.family == "flux"
    assert tuple(manifest.slow_timesteps) == run.plan.lists.slow
    assert tuple(manifest.fast_timesteps) == run.plan.lists.fast
    for phase in ("slow", "fast"):
        weights = manifest.lora_dir(phase, run.output / "glance.json") / "pytorch_lora_weights.safetensors"
        with safe_open(weights, "pt") as handle:
            keys = list(handle.keys())
        assert keys and all(k.startswith("transformer.") for k in keys)
        assert any(".lora_A." in k for k in keys) and any(".lora_B." in k for k in keys)
        assert manifest.phases[phase].duration_s > 0
        assert f"{phase}: done" in run.output_text
    # SimpleTuner ran with the lists glance wrote.
    used = json.loads((run.output / "glance-fast" / "simpletuner_config.json").read_text())
    assert used["flow_custom_timesteps"] == ",".join(repr(t) for t in run.plan.lists.fast)
    # Each phase's SimpleTuner ran in its own working folder: its debug.log is there, the user's own is untouched.
    from support.training import USER_DEBUG_LOG

    assert (run.root / "debug.log").read_text() == USER_DEBUG_LOG
    for phase in ("slow", "fast"):
        assert "[RANK 0]" in (run.output / f"simpletuner-{phase}" / "debug.log").read_text()
    # The user's folder is byte-for-byte what it was.
    assert {p.name: p.read_bytes() for p in run.data.iterdir()} == run.data_before


def test_each_phase_has_its_own_caches_and_bucket_files(trained_run):
    # Two phases at once never write one file: each encodes into its own cache (one image, one caption)...
    for phase in ("slow", "fast"):
        cached = [p.name for p in (trained_run.output / f"simpletuner-{phase}" / "cache").rglob("*.pt")]
        assert len(cached) >= 2, cached  # a latent and a text embedding
    # ...and SimpleTuner names the bucket files it writes into the shared dataset folder by each phase's dataset id.
    buckets = sorted(p.name for p in (trained_run.output / "dataset").glob("*.json"))
    assert [name for name in buckets if "indices" in name] == [
        "aspect_ratio_bucket_indices_glance-pair-fast.json",
        "aspect_ratio_bucket_indices_glance-pair-slow.json",
    ]


def test_trained_loras_load_into_flux_pipeline(trained_run):
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(trained_run.model, use_safetensors=True)
    pipe.load_lora_weights(trained_run.output / "glance-slow", adapter_name="slow")
    pipe.load_lora_weights(trained_run.output / "glance-fast", adapter_name="fast")
    assert set(pipe.get_list_adapters()["transformer"]) == {"slow", "fast"}
    # Plain diffusers loads them at the strength they were trained at (alpha / rank), because glance
    # writes the adapter config SimpleTuner 4.10.1 leaves out of its final save.
    config = trained_run.plan.configs["slow"]
    layers = [m for m in pipe.transformer.modules() if hasattr(m, "scaling") and "slow" in m.scaling]
    assert layers
    for layer in layers:
        assert layer.scaling["slow"] == layer.scaling["fast"] == config.lora_alpha / config.lora_rank


def test_second_run_skips_and_force_retrains(trained_run, tmp_path):
    import shutil

    weights = {p: (trained_run.output / f"glance-{p}" / "pytorch_lora_weights.safetensors") for p in ("slow", "fast")}
    before = {p: w.read_bytes() for p, w in weights.items()}
    again = trained_run.train()
    assert again.returncode == 0, again.stderr
    assert "slow: up to date" in again.stderr and "fast: up to date" in again.stderr
    assert {p: w.read_bytes() for p, w in weights.items()} == before

    # --force on a copy of the run (the session's pair stays as the quality tests measure it), with few
    # steps: a retrain is a retrain, and start-up dominates a 4-step phase.
    for folder in ("data", "config", "output"):
        shutil.copytree(trained_run.root / folder, tmp_path / folder, ignore=shutil.ignore_patterns("samples"))
    args = trained_run.train_args()
    for flag, value in (("--output-dir", "output"), ("--config-dir", "config"), ("--steps", "4")):
        args[args.index(flag) + 1] = str(tmp_path / value) if flag != "--steps" else value
    args[1] = str(tmp_path / "data" / "glance.png")
    from support.training import run_glance

    forced = run_glance(*args, "--force", "--only", "fast", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert "fast: done" in forced.stderr and "slow:" not in forced.stderr
    copied = {p: tmp_path / "output" / f"glance-{p}" / "pytorch_lora_weights.safetensors" for p in ("slow", "fast")}
    assert copied["slow"].read_bytes() == before["slow"]
    assert copied["fast"].read_bytes() != before["fast"]  # retrained from scratch, not resumed
    assert load_manifest(tmp_path / "output" / "glance.json").phases["fast"].lora_dir == "glance-fast"


# --- failure paths, with a stand-in simpletuner ------------------------------------------------


@pytest.fixture
def fake(tmp_path, monkeypatch, tiny):
    """A pair in tmp_path/data, a tiny Flux as tmp_path/model, cwd tmp_path, a stand-in `simpletuner` first on PATH."""
    write_sample_pair(tmp_path / "data")
    (tmp_path / "model").symlink_to(tiny("flux").model, target_is_directory=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "simpletuner"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{SUPPORT / "fake_simpletuner.py"}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SIMPLETUNER_CALLS", str(tmp_path / "calls.jsonl"))
    monkeypatch.setenv("FAKE_SIMPLETUNER_PIDS", str(tmp_path / "pids.jsonl"))
    monkeypatch.delenv("GLANCE_SIMPLETUNER", raising=False)
    return tmp_path


def calls(workdir: Path) -> list[dict]:
    path = workdir / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


TRAIN = ("train", "data/glance.png", "--model", "model", "--resolution", "64", "--device", "cpu", "--steps", "3")
SEQUENTIAL = (*TRAIN, "--phases", "sequential")  # the tests of one phase after the other
PARALLEL = (*TRAIN, "--phases", "parallel")


def started(workdir: Path) -> list[dict]:
    """The stand-in's {"phase", "pids"} lines: one per phase started."""
    path = workdir / "pids.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for(condition, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)
    return condition()


def test_stand_in_success_records_both_phases(fake, monkeypatch):
    monkeypatch.setenv("FAKE_SIMPLETUNER_MODE", "ok")
    result = run_cli(*SEQUENTIAL)
    assert result.exit_code == 0, result.output
    assert [c["output_dir"] for c in calls(fake)] == ["../glance-slow", "../glance-fast"]
    # Each phase's SimpleTuner runs in its own working folder in the run folder.
    assert [c["cwd"] for c in calls(fake)] == [str(fake / "output" / f"simpletuner-{p}") for p in ("slow", "fast")]
    assert calls(fake)[0]["argv"][:2] == ["train", "--env"]
    assert load_manifest(fake / "output/glance.json").complete
    log = (fake / "output/glance-slow.log").read_text()
    assert "step_loss=0.1667" in log
    assert "| INFO     | Loading the model" in log and "\x1b[" not in log  # no colour codes in a log file
    from safetensors import safe_open

    with safe_open(fake / "output/glance-slow/pytorch_lora_weights.safetensors", "pt") as handle:
        written = json.loads(handle.metadata()["lora_adapter_metadata"])  # added by glance after the phase
    assert written["transformer.r"] == 16 and written["transformer.lora_alpha"] == 64
    assert written["transformer.target_modules"] == ["single_transformer_blocks.0.attn.to_q"]


def test_crash_in_slow_phase_stops_the_run(fake, monkeypatch):
    monkeypatch.setenv("FAKE_SIMPLETUNER_MODE", "crash")
    result = run_cli(*SEQUENTIAL)
    assert result.exit_code == 1
    assert [c["output_dir"] for c in calls(fake)] == ["../glance-slow"]  # fast never started
    assert "the slow phase failed (exit code 1)" in result.stderr
    assert "output/glance-slow.log" in result.stderr
    # The cause first, then the error with the log's path; not the log's raw last lines.
    end = result.stderr.splitlines()[-2:]
    assert end[0] == "slow: RuntimeError: CUDA out of memory (pretend, slow)" and end[1].startswith("glance: error:")
    assert "Using environment" not in result.stderr
    assert "Traceback" not in result.output
    assert not load_manifest(fake / "output/glance.json").phases


def test_exit_zero_without_weights_is_a_failure(fake, monkeypatch):
    monkeypatch.setenv("FAKE_SIMPLETUNER_MODE", "noweights")
    result = run_cli(*SEQUENTIAL)
    assert result.exit_code == 1
    assert "exited 0 but wrote no output/glance-slow/pytorch_lora_weights.safetensors" in result.stderr
    assert len(calls(fake)) == 1


def alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting for a parent that is gone too."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_unreadable_weights_are_a_failure(fake, monkeypatch):
    monkeypatch.setenv("FAKE_SIMPLETUNER_MODE", "badweights")
    result = run_cli(*SEQUENTIAL)
    assert result.exit_code == 1
    assert "output/glance-slow/pytorch_lora_weights.safetensors is not a readable safetensors file" in result.stderr
    assert result.stderr.count("glance: error:") == 1 and "Traceback" not in result.output
    assert len(calls(fake)) == 1
    assert not load_manifest(fake / "output/glance.json").phases


def glance_process(fake: Path, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "glance", *args],
        cwd=fake,
        env=dict(os.environ, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize(
    ("args", "sig"),
    [(SEQUENTIAL, signal.SIGINT), (PARALLEL, signal.SIGINT), (PARALLEL, signal.SIGTERM)],
    ids=["sequential", "parallel", "parallel-sigterm"],
)
def test_ctrl_c_stops_the_children_and_exits_130(fake, args, sig):
    # The stand-in starts its grandchild in a session of its own, as `simpletuner train` starts accelerate.
    proc = glance_process(fake, *args, FAKE_SIMPLETUNER_MODE="hang")
    running = 2 if args is PARALLEL else 1
    assert wait_for(lambda: len(started(fake)) == running), proc.communicate(timeout=30)
    pids = [pid for line in started(fake) for pid in line["pids"]]
    assert len(pids) == 2 * running and all(alive(pid) for pid in pids)
    proc.send_signal(sig)  # Ctrl-C; `kill` (SIGTERM) stops the phases the same way
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert ("interrupted: slow and fast phase not done" if running == 2 else "interrupted: slow phase not done") in err
    assert not [pid for pid in pids if alive(pid)]  # nothing left running
    assert not load_manifest(fake / "output/glance.json").phases  # nothing claims success
    assert len(calls(fake)) == running
    assert not (fake / "output" / "glance.lock").exists()


@pytest.mark.parametrize("failing", ["slow", "fast"])
def test_parallel_failure_of_either_phase_stops_the_other(fake, failing):
    other = "fast" if failing == "slow" else "slow"
    env = {"FAKE_SIMPLETUNER_MODE": "hang", f"FAKE_SIMPLETUNER_MODE_{failing.upper()}": "crash-later"}
    proc = glance_process(fake, *PARALLEL, **env)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert {line["phase"] for line in started(fake)} == {"slow", "fast"}  # both were running
    pids = [pid for line in started(fake) for pid in line["pids"]]
    assert not [pid for pid in pids if alive(pid)]  # the hanging phase and its own session are gone
    cause, error = err.strip().splitlines()[-2:]
    assert cause == f"{failing}: RuntimeError: CUDA out of memory (pretend, {failing})"
    assert error.startswith(f"glance: error: the {failing} phase failed (exit code 1); the {other} phase was stopped")
    assert f"output/glance-{failing}.log" in error and "Traceback" not in err
    assert not load_manifest(fake / "output/glance.json").phases
    assert not (fake / "output" / "glance.lock").exists()


def test_parallel_success_writes_what_sequential_writes(fake, monkeypatch):
    def files(folder: str) -> list[str]:
        return sorted(str(p.relative_to(fake / folder)) for p in (fake / folder).rglob("*") if p.is_file())

    monkeypatch.setenv("FAKE_SIMPLETUNER_MODE", "ok")
    assert run_cli(*SEQUENTIAL).exit_code == 0
    sequential = files("output"), tree(fake / "config")
    result = run_cli(*PARALLEL, "--force")
    assert result.exit_code == 0, result.output
    assert "phases: both at once (--phases parallel, on the CPU)" in result.stderr
    assert {line["phase"] for line in started(fake)[2:]} == {"slow", "fast"}
    # The same files, and the same configs: a phase done one way is up to date the other way.
    assert (files("output"), tree(fake / "config")) == sequential
    assert load_manifest(fake / "output/glance.json").complete
    again = run_cli(*SEQUENTIAL)
    assert "slow: up to date" in again.stderr and "fast: up to date" in again.stderr and len(calls(fake)) == 4


def test_missing_simpletuner_names_the_install_command(fake, monkeypatch):
    monkeypatch.setenv("GLANCE_SIMPLETUNER", str(fake / "nowhere" / "simpletuner"))
    result = run_cli(*TRAIN)
    assert result.exit_code == 1
    assert "pip install 'simpletuner==4.10.1'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (fake / "output").exists()


def test_changed_option_retrains_only_the_phase_it_changes(fake, monkeypatch):
    monkeypatch.setenv("FAKE_SIMPLETUNER_MODE", "ok")
    assert run_cli(*SEQUENTIAL).exit_code == 0
    slow_list = json.loads((fake / "config/glance-slow.json").read_text())["flow_custom_timesteps"]
    stale = fake / "output/glance-fast/checkpoint-2"
    stale.mkdir()
    # The configs glance wrote itself are glance's to replace; only the fast phase's inputs changed.
    result = run_cli(*SEQUENTIAL, "--slow-timesteps", slow_list, "--fast-timesteps", "900,500,100")
    assert result.exit_code == 0, result.output
    assert "slow: up to date" in result.stderr
    assert [c["output_dir"] for c in calls(fake)] == ["../glance-slow", "../glance-fast", "../glance-fast"]
    assert not stale.exists()  # retrained from an empty folder, never resumed
    fast = json.loads((fake / "config/glance-fast.json").read_text())
    assert fast["flow_custom_timesteps"] == "900.0,500.0,100.0"
    assert load_manifest(fake / "output/glance.json").fast_timesteps == [900.0, 500.0, 100.0]


def test_only_one_phase_leaves_the_other_unfinished_when_its_inputs_changed(fake, monkeypatch):
    monkeypatch.setenv("FAKE_SIMPLETUNER_MODE", "ok")
    assert run_cli(*TRAIN).exit_code == 0
    result = run_cli(*TRAIN, "--slow-timesteps", "1000,950", "--fast-timesteps", "900,100", "--only", "fast")
    assert result.exit_code == 0, result.output
    manifest = load_manifest(fake / "output/glance.json")
    # The old slow LoRA was trained on another list: it must not be sampled with the new one.
    assert set(manifest.phases) == {"fast"} and not manifest.complete
    assert "phases done: fast" in result.stdout


def test_hand_edited_config_needs_force(fake, monkeypatch):
    monkeypatch.setenv("FAKE_SIMPLETUNER_MODE", "ok")
    assert run_cli(*TRAIN).exit_code == 0
    edited = fake / "config/glance-slow.json"
    edited.write_text(edited.read_text().replace('"seed": 0', '"seed": 7'))
    result = run_cli(*TRAIN, "--learning-rate", "0.001")
    assert result.exit_code == 1 and "config/glance-slow.json exists and differs" in result.stderr
    assert '"seed": 7' in edited.read_text() and len(calls(fake)) == 2
    result = run_cli(*TRAIN, "--learning-rate", "0.001", "--force")
    assert result.exit_code == 0, result.output
    assert len(calls(fake)) == 4 and '"seed": 0' in edited.read_text()


def test_changed_image_retrains_without_force(fake, monkeypatch):
    monkeypatch.setenv("FAKE_SIMPLETUNER_MODE", "ok")
    assert run_cli(*TRAIN).exit_code == 0
    write_sample_pair(fake / "data2", size=96)
    (fake / "data" / "glance.png").write_bytes((fake / "data2" / "glance.png").read_bytes())
    result = run_cli(*TRAIN)
    assert result.exit_code == 0, result.output
    assert len(calls(fake)) == 4  # both phases again: their weights came from another image
    assert (fake / "output/dataset/glance.png").read_bytes() == (fake / "data/glance.png").read_bytes()


def test_configs_never_replace_a_finished_runs_pair_without_force(fake, monkeypatch):
    # `glance configs` trains nothing: restaging another pair under finished LoRAs would leave the
    # manifest saying "done" beside a dataset they were not trained on (export and push would lie).
    monkeypatch.setenv("FAKE_SIMPLETUNER_MODE", "ok")
    assert run_cli(*TRAIN).exit_code == 0
    write_sample_pair(fake / "other", size=96)
    configs = ("configs", "--out", "config", *TRAIN[2:])
    output_before, config_before = tree(fake / "output"), tree(fake / "config")
    refused = run_cli(configs[0], "other/glance.png", *configs[1:])
    assert refused.exit_code == 1
    assert "holds a finished run" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert tree(fake / "output") == output_before and tree(fake / "config") == config_before
    same = run_cli(configs[0], "data/glance.png", *configs[1:])  # the run's own pair: nothing to refuse
    assert same.exit_code == 0, same.output
    assert load_manifest(fake / "output/glance.json").complete
    forced = run_cli(configs[0], "other/glance.png", *configs[1:], "--force")
    assert forced.exit_code == 0, forced.output
    assert (fake / "output/dataset/glance.png").read_bytes() == (fake / "other/glance.png").read_bytes()
    assert load_manifest(fake / "output/glance.json").phases == {}  # no longer claims the old LoRAs
    export = run_cli("export", "comfyui", "-o", "output")
    assert export.exit_code == 1 and "has not finished" in export.stderr


def test_model_weights_replaced_in_place_retrain_without_force(fake, monkeypatch):
    # The configs name a local model by its path only: new weights under the same path must not
    # leave LoRAs (or SimpleTuner's cached latents) of the old ones standing as up to date.
    import shutil

    from safetensors.torch import load_file, save_file

    monkeypatch.setenv("FAKE_SIMPLETUNER_MODE", "ok")
    shutil.copytree(fake / "model", fake / "own-model")
    args = [*TRAIN]
    args[args.index("model")] = "own-model"
    assert run_cli(*args).exit_code == 0 and len(calls(fake)) == 2
    assert run_cli(*args).exit_code == 0 and len(calls(fake)) == 2  # nothing changed: up to date
    weights = next((fake / "own-model" / "transformer").glob("*.safetensors"))
    save_file({name: tensor + 0.01 for name, tensor in load_file(weights).items()}, weights)
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    assert len(calls(fake)) == 4  # both phases again, on the new weights


@pytest.mark.parametrize(
    ("case", "message"),
    [("missing image", "image not found"), ("empty caption", "is empty"), ("missing caption", "caption not found")],
)
def test_bad_pair_refused_before_anything(fake, case, message):
    if case == "missing image":
        (fake / "data/glance.png").unlink()
    elif case == "empty caption":
        (fake / "data/glance.txt").write_text("")
    else:
        (fake / "data/glance.txt").unlink()
    result = run_cli(*TRAIN)
    assert result.exit_code == 1 and message in result.stderr
    assert not calls(fake) and not (fake / "output").exists() and not (fake / "config").exists()


def test_dry_run_shows_commands_and_runs_nothing(fake):
    result = run_cli(*TRAIN, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "train --env" in result.output and "MIXED_PRECISION=no" in result.output
    assert "PYTHONPATH=" in result.output  # the CPU shim
    assert not calls(fake) and not (fake / "output").exists()


def test_parallel_on_four_gpus_gives_each_phase_its_own(fake, monkeypatch):
    fake_gpus(fake, monkeypatch, *["NVIDIA H100 80GB HBM3, 81559"] * 4)
    result = run_cli(*TRAIN[:-4], "--device", "cuda", "--dry-run", "--num-processes", "2")
    assert result.exit_code == 0, result.output
    assert "phases: both at once (4 GPUs: 2 GPUs per phase)" in result.output
    slow, fast = result.output.split("fast phase:")
    assert "CUDA_VISIBLE_DEVICES=0,1" in slow and "CUDA_VISIBLE_DEVICES=2,3" in fast
    assert "accelerate-2-slow.yaml" in slow and "accelerate-2-fast.yaml" in fast
    assert "MIXED_PRECISION=bf16" in slow and "PYTHONPATH" not in slow
    # Each phase its own dataloader (own caches, own dataset ids) and working folder.
    assert "config/multidatabackend-slow.json" in result.output and "config/multidatabackend-fast.json" in result.output
    assert "output/simpletuner-slow" in slow and "output/simpletuner-fast" in fast
    # The GPUs the user made visible are the ones handed out.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    result = run_cli(*TRAIN[:-4], "--device", "cuda", "--dry-run")
    slow, fast = result.output.split("fast phase:")
    assert "CUDA_VISIBLE_DEVICES=3" in slow and "CUDA_VISIBLE_DEVICES=1" in fast

    from glance.simpletuner import accelerate_config_yaml

    yaml = accelerate_config_yaml(2, "bf16", port=29501)
    assert "num_processes: 2" in yaml and "distributed_type: MULTI_GPU" in yaml and "main_process_port: 29501" in yaml


def test_num_processes_refused_without_cuda(fake):
    result = run_cli(*TRAIN, "--num-processes", "2", "--dry-run")
    assert result.exit_code == 1 and "needs CUDA" in result.stderr


# --- progress -------------------------------------------------------------------------------------

SIMPLETUNER_LINES = [  # as SimpleTuner 4.10.1 prints them (tqdm, ANSI reset included)
    "Epoch 1/4 Steps:   0%|          | 0/4 [00:00<?, ?it/s]\x1b[0m",
    "Epoch 2/4, Steps:  50%|█████     | 2/4 [00:05<00:04,  2.36s/it, lr=0.0005, step_loss=4.63]\x1b[0m",
    "Loading pipeline components...: 100%|██████████| 7/7 [00:00<00:00, 17.47it/s]",
    "Epoch 4/4, Steps: 100%|██████████| 4/4 [00:06<00:00,  1.07s/it, lr=0.0005, step_loss=4.57]\x1b[0m",
]


def test_progress_reads_simpletuner_lines():
    from glance.progress import PhaseProgress

    progress = PhaseProgress("slow", total=4)
    assert "starting SimpleTuner" in progress.render()  # before the step bar: start-up takes most of a tiny run
    moved = [progress.update(line) for line in SIMPLETUNER_LINES]
    assert moved == [True, True, False, True]  # another bar with another total is not the phase
    assert (progress.step, progress.loss, progress.rate) == (4, 4.57, "1.07s/it")
    assert progress.render().startswith("slow: step 4/4  loss 4.5700  1.07s/it  0:")


def test_both_phases_live_on_a_terminal_and_tenths_in_a_log():
    import re

    from glance.progress import PhaseProgress, Reporter

    for tty in (True, False):
        stream = FakeTerminal(tty)
        reporter = Reporter(stream=stream)
        slow, fast = PhaseProgress("slow", total=20), PhaseProgress("fast", total=20)
        reporter.progress(slow)
        reporter.progress(fast)
        shown_both = stream.text
        for step in range(1, 21):
            for progress in (slow, fast):
                progress.update(f"Steps: {step}/20 [00:01<00:01, 2.50s/it, step_loss=0.5]")
                reporter.progress(progress)
        reporter.end(slow)
        reporter.message("slow: done")
        reporter.done()
        plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", stream.text)
        if tty:  # rich's display: a bar per phase, redrawn in place, erased at the end; messages above it
            assert "slow" in shown_both and "fast" in shown_both and shown_both.count("starting SimpleTuner") >= 2
            assert "20/20" in plain and "loss 0.5000  2.50s/it" in plain
            assert "slow: done\n" in plain and stream.text.endswith("\x1b[2K")
        else:  # a plain line per tenth of each phase
            assert plain == stream.text and "\r" not in stream.text
            assert stream.text.count("slow: step") == 10 and stream.text.count("fast: step") == 10
            assert stream.text.endswith("fast: step 20/20  loss 0.5000  2.50s/it  0:00\nslow: done\n")


def test_rich_stays_out_of_help():
    for args in (["--help"], ["train", "--help"]):
        command = [sys.executable, "-X", "importtime", "-m", "glance", *args]
        done = subprocess.run(command, capture_output=True, text=True)
        assert done.returncode == 0
        imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}
        assert "glance.cli.train" in imported and not {name for name in imported if name.startswith("rich")}


# --- why a phase failed ---------------------------------------------------------------------------

LOGS = SUPPORT / "logs"  # real SimpleTuner 4.10.1 output: its traceback, then accelerate's and TorchDynamo's


@pytest.mark.parametrize(
    ("log", "cause"),
    [
        (
            "missing-weights.log",
            "OSError: Error no file named diffusion_pytorch_model.safetensors found in directory /data/broken-flux.",
        ),
        ("cuda-oom.log", "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 72.00 MiB."),
    ],
)
def test_failure_cause_is_the_last_exception_simpletuner_raised(log, cause):
    from glance.failure import failure_cause

    lines = (LOGS / log).read_text().splitlines()
    assert "subprocess.CalledProcessError" in lines[-8]  # accelerate's own error comes later in the log
    assert failure_cause(lines).startswith(cause)


def test_failure_cause_of_rank_prefixed_lines_and_of_none():
    from glance.failure import failure_cause

    assert failure_cause(["[rank0]: ValueError: bad value", "Epoch 1/1"]) == "ValueError: bad value"
    assert failure_cause(["Epoch 1/1, Steps: 1/2", "TorchDynamo compilation metrics:"]) is None


# --- one run per output folder ---------------------------------------------------------------------


def test_second_run_on_a_folder_in_training_stops_and_a_dead_runs_lock_is_taken_over(fake, monkeypatch):
    first = glance_process(fake, *PARALLEL, FAKE_SIMPLETUNER_MODE="hang")
    try:
        assert wait_for(lambda: len(started(fake)) == 2), first.communicate(timeout=30)
        monkeypatch.setenv("FAKE_SIMPLETUNER_MODE", "ok")
        second = run_cli(*TRAIN)
        assert second.exit_code == 1
        assert f"output is being trained by process {first.pid}" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1 and len(calls(fake)) == 2
    finally:  # killed as hard as a crash kills: the lock stays behind with a dead pid
        first.kill()
        first.communicate(timeout=30)
        for pid in [pid for line in started(fake) for pid in line["pids"]]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert (fake / "output" / "glance.lock").read_text().strip() == str(first.pid)
    third = run_cli(*TRAIN)
    assert third.exit_code == 0, third.output
    assert load_manifest(fake / "output/glance.json").complete
    assert not (fake / "output" / "glance.lock").exists()  # released when the run ends
