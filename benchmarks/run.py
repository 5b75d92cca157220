"""Speed and memory of glance against the baselines it replaces, measured in the same run.

    .venv/bin/python benchmarks/run.py                 # all three, prints a table, writes benchmarks/latest.json
    .venv/bin/python benchmarks/run.py --only infer    # infer | train | phases | startup | many | quality

1. infer:   `glance infer` (one pipeline, one loop) against the published two-call recipe (two
            `from_pretrained`, slow call then fast call) on the same synthetic FLUX with >= 1 GB
            of transformer weights and the same two LoRAs. Wall time, peak RSS, pipeline loads.
2. train:   `glance train --phases sequential` against two bare `simpletuner train` runs, on
            the same tiny FLUX, image and steps.
   phases:  `glance train --phases parallel` against `--phases sequential`, in the same run: the tiny
            FLUX (4 steps) and the shipped shapes model (the demo's 60 steps). Wall time and the CPU
            time of all processes (the children's rusage), alternating, --phase-repeats times each.
3. startup: `glance --help` against `hf --help` (huggingface_hub's CLI, installed with SimpleTuner).
4. many:    eight images (two prompts x four seeds): one `glance infer` process against eight runs
            of the published recipe, on the same bench model. Wall time, and the overhead beyond
            sampling: wall time minus the time spent in the denoising steps (the part a GPU makes
            small, so the overhead ratio is the figure that carries over to a GPU).
5. quality: what a pair does to the images of the small shapes model glance ships, judged from the
            pixels, against the base model at 50, 10 and 4 steps, the published recipe and the base
            model on glance's sigmas without LoRAs (benchmarks/quality.py; about 30 minutes on 2 cores).

Every measurement runs in a fresh child process (peak RSS is the child's own). Nothing here is
asserted by the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
PROMPT = "a red circle and a blue square on a warm gradient"
MANY_PROMPTS = (PROMPT, "a lighthouse at sunset")
MANY_SEEDS = (0, 1, 2, 3)
INFER_SIZE = 256  # px; the bench model's VAE downsamples 8x like the real one
TRAIN_STEPS = 4


# --- children: each prints one JSON line with its measurements -------------------------------


def _count_pipeline_loads() -> list[int]:
    """Count DiffusionPipeline.from_pretrained calls (every pipeline class inherits it)."""
    from diffusers import DiffusionPipeline

    loads = [0]
    original = DiffusionPipeline.from_pretrained.__func__

    def counting(cls, *args, **kwargs):
        loads[0] += 1
        return original(cls, *args, **kwargs)

    DiffusionPipeline.from_pretrained = classmethod(counting)
    return loads


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def child_glance_infer(work: Path) -> dict:
    start = time.perf_counter()
    loads = _count_pipeline_loads()
    from glance.infer import run_infer
    from glance.infer_options import InferOptions
    from glance.manifest import load_manifest

    manifest = load_manifest(work / "run" / "glance.json")
    options = InferOptions(
        prompt=PROMPT,
        model=str(work / "model"),
        family="flux",
        lists=manifest.lists,
        slow_lora=work / "run" / "glance-slow",
        fast_lora=work / "run" / "glance-fast",
        out=work / "glance.png",
        width=INFER_SIZE,
        height=INFER_SIZE,
        device="cpu",
        dtype="float32",
        force=True,
    )
    result = run_infer(options)
    return {
        "wall_s": time.perf_counter() - start,
        "load_s": result.load_seconds,
        "sample_s": result.images[0].seconds,
        "peak_rss_mb": _peak_rss_mb(),
        "model_loads": loads[0],
    }


def _denoise_clock(pipe):
    """(spans, callback): pass the callback as callback_on_step_end; spans gets each call's denoising seconds.

    The span runs from the first transformer call to the last step's end, as glance measures its own
    images (glance/sampler.py, _render). Measurement only: the callback changes nothing.
    """
    spans: list[float] = []
    first: list[float] = []

    def pre_hook(module, args):
        if not first:
            first.append(time.perf_counter())

    def at_step_end(pipe, step, timestep, callback_kwargs):
        if step == pipe.num_timesteps - 1:
            spans.append(time.perf_counter() - first.pop())
        return {}

    pipe.transformer.register_forward_pre_hook(pre_hook)
    return spans, at_step_end


def child_recipe_infer(work: Path, prompt: str = PROMPT, seed: int = 0, out: str = "recipe.png") -> dict:
    """../shared/seed's step 4, as published (benchmarks/recipe.py): load, slow call, load, fast call."""
    start = time.perf_counter()
    loads = _count_pipeline_loads()
    import torch
    from recipe import fast_call, recipe_pipeline, recipe_sigmas, slow_call

    from glance.manifest import load_manifest

    manifest = load_manifest(work / "run" / "glance.json")
    slow_sigmas, fast_sigmas = recipe_sigmas(manifest)
    generator = torch.Generator(device="cpu").manual_seed(seed)

    clock = time.perf_counter()
    pipe = recipe_pipeline(work / "model", work / "run" / "glance-slow")
    load_s = time.perf_counter() - clock
    slow_denoise, slow_clock = _denoise_clock(pipe)

    clock = time.perf_counter()
    latents = slow_call(pipe, prompt, slow_sigmas, generator, INFER_SIZE, slow_clock)
    sample_s = time.perf_counter() - clock

    clock = time.perf_counter()
    pipe_fast = recipe_pipeline(work / "model", work / "run" / "glance-fast")
    load_s += time.perf_counter() - clock
    fast_denoise, fast_clock = _denoise_clock(pipe_fast)

    clock = time.perf_counter()
    image = fast_call(pipe_fast, prompt, fast_sigmas, latents, generator, INFER_SIZE, fast_clock)
    sample_s += time.perf_counter() - clock
    image.save(work / out)
    return {
        "wall_s": time.perf_counter() - start,
        "load_s": load_s,
        "sample_s": sample_s,
        "denoise_s": sum(slow_denoise) + sum(fast_denoise),
        "peak_rss_mb": _peak_rss_mb(),
        "model_loads": loads[0],
    }


CHILDREN = {"glance-infer": child_glance_infer, "recipe-infer": child_recipe_infer}


def run_child(name: str, work: Path, **kwargs) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", name, "--workdir", str(work), "--child-args", json.dumps(kwargs)],
        capture_output=True,
        text=True,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child {name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- the three benchmarks ---------------------------------------------------------------------


def prepare_infer(work: Path) -> None:
    """The >= 1 GB synthetic FLUX, and a slow and a fast LoRA for it with a manifest to read."""
    from glance.tiny import build_tiny_model, load_transformer, write_random_lora

    model = build_tiny_model("flux", work / "model", scale="bench")
    run = work / "run"
    for seed, phase in enumerate(("slow", "fast"), start=1):
        if not (run / f"glance-{phase}" / "pytorch_lora_weights.safetensors").is_file():
            write_random_lora(run / f"glance-{phase}", load_transformer(model), "flux", seed=seed, rank=16)
    if not (run / "glance.json").is_file():
        from glance.families import FAMILIES, model_schedule
        from glance.manifest import PhaseRecord, RunManifest
        from glance.schedule import default_lists

        family = FAMILIES["flux"]
        lists = default_lists(family, model_schedule(str(model), family), 1024)
        record = {"inputs_sha256": "synthetic", "duration_s": 0.0, "finished_at": "2026-01-01T00:00:00Z"}
        RunManifest(
            glance_version="bench",
            model=str(model),
            family="flux",
            resolution=INFER_SIZE,
            slow_timesteps=list(lists.slow),
            fast_timesteps=list(lists.fast),
            train_guidance=1.0,
            seed=0,
            steps=0,
            rank=16,
            learning_rate=5e-4,
            phases={p: PhaseRecord(lora_dir=f"glance-{p}", **record) for p in ("slow", "fast")},
        ).save(run / "glance.json")


def bench_infer(work: Path) -> dict:
    prepare_infer(work)
    weights = sum(p.stat().st_size for p in (work / "model" / "transformer").glob("*.safetensors"))
    glance = run_child("glance-infer", work)
    recipe = run_child("recipe-infer", work)
    return {
        "transformer_weights_gb": round(weights / 1e9, 2),
        "size_px": INFER_SIZE,
        "glance": glance,
        "recipe": recipe,
        "ratio_time": glance["wall_s"] / recipe["wall_s"],
        "ratio_load": glance["load_s"] / recipe["load_s"],
        "ratio_sample": glance["sample_s"] / recipe["sample_s"],
        "ratio_memory": glance["peak_rss_mb"] / recipe["peak_rss_mb"],
    }


def bench_many(work: Path) -> dict:
    """Eight images: one `glance infer` for 2 prompts x 4 seeds against eight recipe processes.

    Wall times are whole processes, measured here (interpreter start and imports included: they
    are part of what each extra process costs). Overhead = wall - seconds in denoising steps.
    """
    prepare_infer(work)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    seeds = ",".join(str(seed) for seed in MANY_SEEDS)
    cmd = [sys.executable, "-m", "glance", "infer", *MANY_PROMPTS, "--seeds", seeds, "-o", str(work / "run")]
    cmd += ["--out", str(work / "many" / "glance.png"), "--device", "cpu", "--dtype", "float32"]
    cmd += ["--force", "--json", "--quiet"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    glance_wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"glance infer failed:\n{proc.stderr[-3000:]}")
    run = json.loads(proc.stdout)
    glance = {
        "wall_s": glance_wall,
        "load_s": run["load_seconds"],
        "denoise_s": sum(image["denoise_seconds"] for image in run["images"]),
        "images": len(run["images"]),
    }
    recipe_runs = []
    for prompt in MANY_PROMPTS:
        for seed in MANY_SEEDS:
            start = time.perf_counter()
            child = run_child("recipe-infer", work, prompt=prompt, seed=seed, out=f"recipe-{len(recipe_runs)}.png")
            recipe_runs.append({**child, "process_wall_s": time.perf_counter() - start})
    recipe = {
        "wall_s": sum(r["process_wall_s"] for r in recipe_runs),
        "load_s": sum(r["load_s"] for r in recipe_runs),
        "denoise_s": sum(r["denoise_s"] for r in recipe_runs),
        "images": len(recipe_runs),
        "runs": recipe_runs,
    }
    for side in (glance, recipe):
        side["overhead_s"] = side["wall_s"] - side["denoise_s"]
    return {
        "size_px": INFER_SIZE,
        "prompts": len(MANY_PROMPTS),
        "seeds": len(MANY_SEEDS),
        "glance": glance,
        "recipe": recipe,
        "ratio_time": glance["wall_s"] / recipe["wall_s"],
        "ratio_overhead": glance["overhead_s"] / recipe["overhead_s"],
    }


def _timed(cmd: list[str], cwd: Path, env: dict) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def bench_train(work: Path, repeats: int = 2) -> dict:
    """Fresh output folders every time; the baseline's phases each encode their own cache.

    The two alternate, `repeats` times each, and the fastest of each counts: on 2 shared cores a
    single pair of runs differs by a few seconds either way.
    """
    from glance.run_plan import TrainSettings, plan_run, write_configs
    from glance.simpletuner import find_simpletuner, phase_command, phase_env
    from glance.tiny import build_tiny_model, write_sample_pair

    model = build_tiny_model("flux", work / "tiny-flux")
    write_sample_pair(work / "data")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    simpletuner = find_simpletuner()

    def glance_run() -> dict:
        for folder in ("glance-out", "glance-config"):
            shutil.rmtree(work / folder, ignore_errors=True)
        cmd = [str(VENV_BIN / "glance"), "train", "data/glance.png", "--model", str(model), "--resolution", "128"]
        cmd += ["--steps", str(TRAIN_STEPS), "--device", "cpu", "-o", "glance-out", "--config-dir", "glance-config"]
        return {"total": _timed([*cmd, "--phases", "sequential"], work, env)}

    def bare_run() -> dict:
        """The same configs, but each phase with its own caches, run by bare `simpletuner train`."""
        for folder in ("bare-out", "bare-config"):
            shutil.rmtree(work / folder, ignore_errors=True)
        settings = TrainSettings(
            image=Path("data/glance.png"),
            model=str(model),
            resolution=128,
            steps=TRAIN_STEPS,
            device="cpu",
            output_dir=Path("bare-out"),
            config_dir=Path("bare-config"),
        )
        cwd = Path.cwd()
        os.chdir(work)  # the settings' paths are relative to the work folder
        try:
            plan = plan_run(settings)
            write_configs(plan)
        finally:
            os.chdir(cwd)
        phases = {}
        for phase in ("slow", "fast"):  # in the phase's working folder, as glance runs them (see RunPlan)
            command = phase_command(simpletuner, work / plan.config_paths[phase])
            phases[phase] = _timed(command, work / plan.work_dir(phase), phase_env(simpletuner, cuda=False, base=env))
        return {"total": sum(phases.values()), **phases}

    runs: dict[str, list[dict]] = {"glance": [], "bare": []}
    for _ in range(repeats):
        runs["glance"].append(glance_run())
        runs["bare"].append(bare_run())
    glance_s = min(run["total"] for run in runs["glance"])
    bare_s = min(run["total"] for run in runs["bare"])
    return {"steps": TRAIN_STEPS, "glance_s": glance_s, "bare_s": bare_s, "runs": runs, "ratio_time": glance_s / bare_s}


def _timed_with_cpu(cmd: list[str], cwd: Path, env: dict) -> dict:
    """Wall seconds and CPU seconds (user + system of all its processes, waited for) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = _timed(cmd, cwd, env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}


def _load_average() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError):
        return None


def bench_phases(work: Path, repeats: int = 2, shapes_repeats: int = 1) -> dict:
    """`glance train --phases parallel` against `--phases sequential`, fresh run folders each time.

    The two alternate and the fastest of each counts (on shared cores the slower runs are the ones
    another job slowed down); every run is kept with its CPU time and the load average before it,
    so the noise can be read from the file.
    """
    from glance.demo import DEMO_STEPS, TRAINING_CAPTION, TRAINING_SEED
    from glance.shapes import write_pair
    from glance.smallmodel import RESOLUTION, shipped_model
    from glance.tiny import build_tiny_model, write_sample_pair

    env = dict(os.environ, HF_HUB_OFFLINE="1")
    tiny = build_tiny_model("flux", work / "tiny-flux")
    write_sample_pair(work / "tiny-data")
    write_pair(work / "shapes-data", TRAINING_CAPTION, TRAINING_SEED)
    cases = {
        "tiny": (["tiny-data/glance.png", "--model", str(tiny), "--resolution", "128", "--steps", str(TRAIN_STEPS)],
                 repeats),
        "shapes": (["shapes-data/glance.png", "--model", str(shipped_model()), "--resolution", str(RESOLUTION),
                    "--steps", str(DEMO_STEPS)], shapes_repeats),
    }  # fmt: skip
    results: dict = {}
    for name, (args, times) in cases.items():
        runs: dict[str, list[dict]] = {"parallel": [], "sequential": []}
        for _ in range(times):
            for mode in ("parallel", "sequential"):
                out = work / f"{name}-{mode}"
                shutil.rmtree(out, ignore_errors=True)
                shutil.rmtree(work / f"{name}-{mode}-config", ignore_errors=True)
                cmd = [str(VENV_BIN / "glance"), "train", *args, "--device", "cpu", "-o", str(out)]
                cmd += ["--config-dir", str(work / f"{name}-{mode}-config"), "--phases", mode]
                load = _load_average()
                runs[mode].append({**_timed_with_cpu(cmd, work, env), "load_before": load})
        parallel = min(run["wall_s"] for run in runs["parallel"])
        sequential = min(run["wall_s"] for run in runs["sequential"])
        results[name] = {
            "steps": int(args[args.index("--steps") + 1]),
            "parallel_s": parallel,
            "sequential_s": sequential,
            "ratio_time": parallel / sequential,
            "runs": runs,
        }
    return results


def bench_startup(repeats: int = 7) -> dict:
    def median_time(cmd: list[str]) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=True)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    glance = median_time([str(VENV_BIN / "glance"), "--help"])
    hf = median_time([str(VENV_BIN / "hf"), "--help"])
    return {"glance_help_s": glance, "hf_help_s": hf, "ratio_time": glance / hf}


# --- report ------------------------------------------------------------------------------------


def machine() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        cpu = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
        info["cpu"] = cpu.split(":", 1)[1].strip()
        mem = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
        info["memory_gb"] = round(int(mem.split()[1]) / 1024**2, 1)
    except (OSError, StopIteration):
        pass
    from importlib.metadata import version

    info.update({name: version(name) for name in ("torch", "diffusers", "simpletuner")})
    return info


def print_table(results: dict) -> None:
    m = results["machine"]
    print(f"\nmachine: {m.get('cpu', '?')}, {m['cpus']} cores, {m.get('memory_gb', '?')} GB, torch {m['torch']}")
    rows = [("benchmark", "glance", "baseline", "ratio", "goal")]
    if "infer" in results:
        r = results["infer"]
        g, b = r["glance"], r["recipe"]
        rows.append(
            ("infer wall time (s)", f"{g['wall_s']:.1f}", f"{b['wall_s']:.1f}", f"{r['ratio_time']:.2f}", "<= 0.6")
        )
        rows.append(("infer peak RSS (MB)", f"{g['peak_rss_mb']:.0f}", f"{b['peak_rss_mb']:.0f}",
                     f"{r['ratio_memory']:.2f}", "<= 0.6"))  # fmt: skip
        rows.append(
            ("  loading model + LoRAs (s)", f"{g['load_s']:.1f}", f"{b['load_s']:.1f}", f"{r['ratio_load']:.2f}", "")
        )
        rows.append(
            ("  sampling 10 steps (s)", f"{g['sample_s']:.1f}", f"{b['sample_s']:.1f}", f"{r['ratio_sample']:.2f}", "")
        )
        rows.append(("infer pipeline loads", str(g["model_loads"]), str(b["model_loads"]), "", ""))
    if "many" in results:
        r = results["many"]
        g, b = r["glance"], r["recipe"]
        n = g["images"]
        rows.append((f"{n} images wall time (s)", f"{g['wall_s']:.1f}", f"{b['wall_s']:.1f}", f"{r['ratio_time']:.2f}",
                     ""))  # fmt: skip
        rows.append(("  in denoising steps (s)", f"{g['denoise_s']:.1f}", f"{b['denoise_s']:.1f}", "", ""))
        rows.append((f"{n} images overhead beyond sampling (s)", f"{g['overhead_s']:.1f}", f"{b['overhead_s']:.1f}",
                     f"{r['ratio_overhead']:.2f}", "<= 0.15"))  # fmt: skip
    if "train" in results:
        r = results["train"]
        rows.append(("train both phases (s)", f"{r['glance_s']:.1f}", f"{r['bare_s']:.1f}", f"{r['ratio_time']:.2f}",
                     "<= 1.0"))  # fmt: skip
    for name, r in results.get("phases", {}).items():  # glance = parallel, baseline = sequential
        if not isinstance(r, dict) or "parallel_s" not in r:
            continue
        rows.append((f"train {name}, parallel / sequential (s)", f"{r['parallel_s']:.1f}", f"{r['sequential_s']:.1f}",
                     f"{r['ratio_time']:.2f}", "< 1.0"))  # fmt: skip
    if "startup" in results:
        r = results["startup"]
        rows.append(("--help (s)", f"{r['glance_help_s']:.3f}", f"{r['hf_help_s']:.3f}", f"{r['ratio_time']:.2f}",
                     "<= 0.3 s"))  # fmt: skip
    for name, *cells in rows:
        print(f"{name:<40}" + "".join(f"{cell:>11}" for cell in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("infer", "train", "phases", "startup", "many", "quality"), action="append")
    parser.add_argument("--phase-repeats", type=int, default=2, help="phases: runs of each mode on the tiny FLUX")
    parser.add_argument("--workdir", type=Path, default=HERE / "work")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--child-args", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=HERE / "latest.json", help="where the results go")
    parser.add_argument("--no-tries", action="store_true", help="quality: skip the pairs trained with other settings")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child](args.workdir, **json.loads(args.child_args))))
        return
    os.environ["HF_HUB_OFFLINE"] = "1"
    args.workdir.mkdir(parents=True, exist_ok=True)
    chosen = args.only or ["startup", "train", "phases", "infer", "many", "quality"]
    results: dict = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M")}
    if "startup" in chosen:
        results["startup"] = bench_startup()
    if "train" in chosen:
        results["train"] = bench_train(args.workdir / "train")
    if "phases" in chosen:
        results["phases"] = bench_phases(args.workdir / "phases", repeats=args.phase_repeats)
    if "infer" in chosen:
        results["infer"] = bench_infer(args.workdir / "infer")
    if "many" in chosen:
        results["many"] = bench_many(args.workdir / "infer")  # the same bench model and LoRAs
    if "quality" in chosen:
        from quality import bench_quality

        results["quality"] = bench_quality(args.workdir / "quality", tries=not args.no_tries)
    print_table(results)
    if "quality" in results:
        from quality import print_quality

        print_quality(results["quality"])
    if args.only and args.json.is_file():  # keep the figures not rerun; each rerun entry says where and when
        kept = json.loads(args.json.read_text())
        for name in chosen:
            results[name].update(machine=results["machine"], date=results["date"])
        results = {**kept, **{name: results[name] for name in chosen}}
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nsaved {args.json}")


if __name__ == "__main__":
    main()
