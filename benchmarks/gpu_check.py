"""Does the memory plan hold on a GPU? Train and sample a FLUX.1-dev-sized random model with glance.

    bash benchmarks/gpu_check.sh                   # one 80 GB GPU, no package index (see the script)
    bash benchmarks/gpu_check.sh --case parallel   # both phases at once against one after the other
    .venv/bin/python benchmarks/gpu_check.py --small --device cpu --workdir /tmp/gc   # the same logic, tiny model

--case memory (the default), in order, each stage written to the JSON as soon as it ends (so a
stage cut off by the time limit still leaves the ones before it):
1. build the model: "full" is FLUX.1-dev's transformer (19 + 38 blocks, width 3072, 11.9 B
   parameters, bf16) with the tiny text encoders and the 8x VAE of glance/tiny/flux.py; --small: the tiny FLUX;
2. `glance train --quantize int8 --gradient-checkpointing` (the slow phase; both with --phases both,
   one after the other, or --phases parallel, both at once);
3. `glance infer --quantize int8` with those LoRAs;
4. `glance train --quantize none --no-gradient-checkpointing` (bf16, the slow phase): the baseline,
   skipped when fewer than --baseline-needs seconds of --budget are left;
5. with --eval (needs --phases both): `glance eval` on the int8 run, four prompts x seed 0, the
   reference at --eval-reference steps, scored by the tiny offline CLIP and DINOv2 (glance/tiny/scorers.py):
   the time per column and the peak memory of an eval of a FLUX-size model.
--case parallel: 1. as above; 2. both phases with `glance train --phases parallel` on the one GPU
(bf16 + gradient checkpointing: 2 x 26.6 GiB fits an 80 GB card); 3. the slow phase alone, then the
fast phase alone (skipped, and the slow one counted twice, when --budget has no room): one after
the other; then the ratio of the wall times, and the ratio projected to the recipe's 60 steps from
each run's start-up (wall minus steps) and s/step. Target: <= 0.6 on a GPU that holds both.
Each run is a real `python -m glance` process. Peak GPU memory: nvidia-smi's memory.used, polled
every 0.2 s (the process total, as ../shared/FACTS.md measured it). s/step: the time between the
first and the last step lines of SimpleTuner's progress bar, over the steps between them (the first
step, with its warm-up, is left out).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROMPT = "a red circle and a blue square on a warm gradient"
STEP_LINE = re.compile(r"^\[(?P<phase>slow|fast)\] .*?(?P<step>\d+)/(?P<total>\d+) \[")


class GpuMemoryPoller:
    """The largest nvidia-smi memory.used (MiB, summed over visible GPUs) while it runs; None without nvidia-smi."""

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.smi = shutil.which("nvidia-smi")
        self.peak_mib: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            done = subprocess.run(
                [self.smi, "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
            )
            if done.returncode == 0:
                used = sum(float(line) for line in done.stdout.split() if line.strip())
                self.peak_mib = max(self.peak_mib or 0.0, used)
            self._stop.wait(self.interval)

    def __enter__(self) -> GpuMemoryPoller:
        if self.smi is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    @property
    def peak_gib(self) -> float | None:
        return None if self.peak_mib is None else round(self.peak_mib / 1024, 2)


def seconds_per_step(step_times: dict[str, dict[int, float]]) -> float | None:
    """Mean s/step over the steps after the first, from when each step's progress line first appeared."""
    rates = []
    for times in step_times.values():
        steps = sorted(s for s in times if s >= 1)
        if len(steps) >= 2 and steps[-1] > steps[0]:
            rates.append((times[steps[-1]] - times[steps[0]]) / (steps[-1] - steps[0]))
    return round(sum(rates) / len(rates), 3) if rates else None


def run_glance(args: list[str], log: Path, total_steps: int | None = None) -> dict:
    """Run `python -m glance ARGS`, its output to `log`; wall time, exit code, peak GPU memory, step times.

    Step times are read from SimpleTuner's progress bar (streamed by `glance train -v`) for a bar of
    `total_steps` steps; other bars (shards, caching) have other totals.
    """
    step_times: dict[str, dict[int, float]] = {}
    started = time.perf_counter()
    with GpuMemoryPoller() as poller, open(log, "w", encoding="utf-8") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "glance", *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        lines = []
        for line in process.stdout:
            sink.write(line)
            lines.append(line)
            match = STEP_LINE.match(line)
            if match and int(match["total"]) == total_steps:
                step_times.setdefault(match["phase"], {}).setdefault(int(match["step"]), time.perf_counter())
        code = process.wait()
    return {
        "command": ["glance", *args],
        "exit_code": code,
        "wall_s": round(time.perf_counter() - started, 1),
        "peak_gpu_gib": poller.peak_gib,
        "s_per_step": seconds_per_step(step_times),
        "steps_seen": {phase: max(times) for phase, times in step_times.items()},
        "last_lines": [line.rstrip() for line in lines[-6:]],
        "phases_line": next((line.rstrip() for line in lines if line.startswith("phases:")), None),  # train's
        "log": str(log),
    }


def build_model(scale: str, folder: Path) -> dict:
    """In a child process, so the GPU memory of building is given back before training starts."""
    started = time.perf_counter()
    code = (
        "import sys; from pathlib import Path; from glance.tiny import build_tiny_model; "
        "build_tiny_model('flux', Path(sys.argv[1]), scale=sys.argv[2])"
    )
    subprocess.run([sys.executable, "-c", code, str(folder), scale], cwd=REPO, check=True)
    weights = sum(p.stat().st_size for p in (folder / "transformer").glob("*.safetensors"))
    seconds = round(time.perf_counter() - started, 1)
    return {"scale": scale, "transformer_gb": round(weights / 1e9, 2), "build_s": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="the tiny FLUX at 64 px instead of the full-size model")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/glance-gpu-check"))
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "gpu_check.json")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument(
        "--phases", choices=("slow", "both", "parallel"), default="slow", help="phases of the int8 run, and how"
    )
    parser.add_argument("--case", choices=("memory", "parallel"), default="memory", help="what to measure")
    parser.add_argument("--budget", type=float, default=450, help="seconds for the whole check")
    parser.add_argument("--baseline-needs", type=float, default=150, help="seconds the bf16 baseline needs")
    parser.add_argument("--eval", action="store_true", help="then `glance eval` the int8 run (--phases both)")
    parser.add_argument("--eval-reference", type=int, default=20, help="steps of the eval's reference column")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    resolution = 64 if args.small else 1024  # the tiny VAE does not downsample: 64 px is 1024 tokens
    results: dict = {"device": args.device, "resolution": resolution, "steps": args.steps, "stages": {}}

    def save(stage: str, value: dict) -> None:
        results["stages"][stage] = value
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"{stage}: {json.dumps(value)}", flush=True)

    from glance.tiny import write_sample_pair

    model = work / ("tiny-flux" if args.small else "flux-dev-size")
    save("build", build_model("tiny" if args.small else "full", model))
    image = write_sample_pair(work / "data", size=resolution)

    train = train_runner(args, model, image, resolution, work)
    if args.case == "parallel":
        return _parallel_case(args, train, save, results, started)

    phases = ["--phases", "parallel" if args.phases == "parallel" else "sequential"]
    only = ["--only", "slow"] if args.phases == "slow" else []
    int8 = train("int8", "--quantize", "int8", "--gradient-checkpointing", *phases, *only)
    save("train_int8", int8)
    if int8["exit_code"] == 0:
        run = work / "int8"
        # With the slow phase only, it stands in for the fast LoRA too (same shape: memory and time are the point).
        slow = str(run / "glance-slow")
        loras = ["--slow", slow, "--fast", slow] if args.phases == "slow" else []
        cmd = ["infer", PROMPT, "-o", str(run), "--quantize", "int8", "--device", args.device]
        cmd += ["--out", str(work / "int8.png"), "--force", "--json", *loras]
        sample = run_glance(cmd, work / "infer-int8.log")
        printed = _last_json(work / "infer-int8.log")
        if printed is not None and printed.get("images"):
            rendered = printed["images"][0]  # (`image` is the training image)
            record = rendered["record"]
            sample.update({k: record.get(k) for k in ("quantize", "memory_plan", "sigmas", "width")})
            sample.update(seconds=rendered["seconds"], load_seconds=printed["load_seconds"])
            sample["adapters"] = [step["adapters"] for step in record.get("steps", [])]
        save("infer_int8", sample)

    if args.eval and int8["exit_code"] == 0 and args.phases == "both":
        save("eval", eval_stage(work, work / "int8", args.device, args.eval_reference))

    left = args.budget - (time.perf_counter() - started)
    if left >= args.baseline_needs:
        bf16 = train("bf16", "--quantize", "none", "--no-gradient-checkpointing", "--only", "slow")
        save("train_bf16", bf16)
        if int8.get("s_per_step") and bf16.get("s_per_step"):
            results["int8_vs_bf16"] = {
                "s_per_step": round(int8["s_per_step"] / bf16["s_per_step"], 2),
                "peak_gpu": round(int8["peak_gpu_gib"] / bf16["peak_gpu_gib"], 2)
                if int8.get("peak_gpu_gib") and bf16.get("peak_gpu_gib")
                else None,
            }
            save("summary", results.pop("int8_vs_bf16"))
    else:
        save("train_bf16", {"skipped": f"{left:.0f} s left of --budget, --baseline-needs {args.baseline_needs:.0f}"})
    print(f"results: {args.json} ({time.perf_counter() - started:.0f} s)")
    return 0 if all(s.get("exit_code", 0) == 0 for s in results["stages"].values()) else 1


def eval_stage(work: Path, run: Path, device: str, reference: int) -> dict:
    """`glance eval` of `run` with the tiny offline scorers: wall time, peak GPU memory, seconds per column."""
    from glance.tiny.scorers import build_tiny_scorer

    prompts = work / "eval-prompts.txt"
    prompts.write_text("a lighthouse at dawn\na red fox in snow\nthree red apples on a plate\na neon sign\n")
    cmd = ["eval", "-o", str(run), "--prompts", str(prompts), "--seeds", "0", "--reference", str(reference),
           "--scorer", "clip", "--scorer", "dino", "--device", device, "--out", str(work / "eval"),
           "--cache", str(work / "eval-cache"), "--force", "--json"]  # fmt: skip
    for kind in ("clip", "dino"):
        cmd += ["--scorer-model", f"{kind}={build_tiny_scorer(kind, work / f'tiny-{kind}')}"]
    result = run_glance(cmd, work / "eval.log")
    report = json.loads((work / "eval" / "eval.json").read_text()) if (work / "eval" / "eval.json").is_file() else {}
    result["seconds_per_image"] = {c["name"]: c["seconds_per_image"] for c in report.get("columns", [])}
    result["verdict"] = report.get("verdict")
    return result


def train_runner(args, model: Path, image: Path, resolution: int, work: Path):
    """`run(label, *options)`: `glance train` into WORK/LABEL with the given options; its record, and the manifest's."""

    def run(label: str, *extra: str, keep: bool = False) -> dict:
        out = work / label
        if not keep:
            shutil.rmtree(out, ignore_errors=True)
        cmd = ["train", str(image), "--model", str(model), "--resolution", str(resolution), "--steps", str(args.steps)]
        cmd += ["--device", args.device, "-o", str(out), "--config-dir", str(work / f"{label}-config"), "--force", "-v"]
        log = work / f"{label}{'-' + extra[-1] if keep else ''}.log"
        result = run_glance([*cmd, *extra], log, total_steps=args.steps)
        manifest = out / "glance.json"
        if manifest.is_file():
            recorded = json.loads(manifest.read_text())
            result["plan"] = {key: recorded.get(key) for key in ("quantize", "gradient_checkpointing", "memory_plan")}
            result["phases_done"] = sorted(recorded.get("phases", {}))
            result["phase_s"] = {p: r["duration_s"] for p, r in recorded.get("phases", {}).items()}
        return result

    return run


def _parallel_case(args, train, save, results: dict, started: float) -> int:
    """Both phases at once, then each alone (the sequential run: slow, then fast, each its own
    `glance train --only`), on the same model, plan and steps. The fast phase alone is skipped when
    the budget has no room for it; the sequential wall is then twice the slow phase's (the phases
    differ only in their timestep lists, so they cost the same)."""
    plan = ("--quantize", "none", "--gradient-checkpointing")
    parallel = train("parallel", *plan, "--phases", "parallel")
    save("train_parallel", parallel)
    alone = {}
    for phase in ("slow", "fast"):
        left = args.budget - (time.perf_counter() - started)
        needs = alone["slow"]["wall_s"] * 1.1 if alone else args.baseline_needs
        if left < needs:
            save(f"train_{phase}_alone", {"skipped": f"{left:.0f} s left of --budget, needs about {needs:.0f}"})
            continue
        # The fast phase goes into the slow one's folder (its configs and pair are there): --only keeps the slow LoRA.
        alone[phase] = train("sequential", *plan, "--only", phase, keep=phase == "fast")
        save(f"train_{phase}_alone", alone[phase])
    ok = parallel["exit_code"] == 0 and alone and all(run["exit_code"] == 0 for run in alone.values())
    if ok:
        walls = [run["wall_s"] for run in alone.values()]
        sequential_s = sum(walls) if len(walls) == 2 else 2 * walls[0]
        summary = {"parallel_s": parallel["wall_s"], "sequential_s": round(sequential_s, 1),
                   "sequential_measured": sorted(alone), "wall_ratio": round(parallel["wall_s"] / sequential_s, 2)}
        rates = [run.get("s_per_step") for run in alone.values()]
        if parallel.get("s_per_step") and all(rates):
            # Wall = start-up + steps x s/step: the same runs at the recipe's 60 steps per phase.
            steps = args.steps - 1  # s/step counts the steps after the first
            start_par = parallel["wall_s"] - steps * parallel["s_per_step"]
            start_seq = [run["wall_s"] - steps * run["s_per_step"] for run in alone.values()]
            seq_60 = sum(start + 59 * rate for start, rate in zip(start_seq, rates, strict=True))
            seq_60 = seq_60 if len(rates) == 2 else 2 * seq_60
            summary.update(projected_ratio_60_steps=round((start_par + 59 * parallel["s_per_step"]) / seq_60, 2),
                           s_per_step={"parallel": parallel["s_per_step"], "alone": rates})  # fmt: skip
        save("summary", summary)
    print(f"results: {args.json} ({time.perf_counter() - started:.0f} s)")
    return 0 if ok and all(s.get("exit_code", 0) == 0 for s in results["stages"].values()) else 1


def _last_json(log: Path) -> dict | None:
    """The JSON object `glance infer --json` printed last (its log also holds progress lines)."""
    text = log.read_text(encoding="utf-8", errors="replace")
    start = text.rfind("\n{")
    start = 0 if start < 0 and text.startswith("{") else start
    if start < 0:
        return None
    try:
        return json.loads(text[start:].strip())
    except ValueError:
        return None


if __name__ == "__main__":
    sys.exit(main())
