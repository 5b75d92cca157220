"""What a Glance pair does to the images, on the small shapes model glance ships (run.py --only quality).

Every caption held out of pretraining x SEEDS, rendered by:
  base 50 / 10 / 4     the base model at its own N-step schedule (50 is the reference)
  base exact 10        the base model on glance's 10 trained sigmas, no LoRA: the schedule's share of any gain
  recipe 10            the published recipe's two pipeline calls (shifted sigmas, slow call ends at 0, then
                       the fast call restarts that latent), with each pair
  glance 10            `glance infer` with each pair (trained on one image each, for the spread)
  glance 2+2           a pair trained on 2 + 2 lists, against base 4
  tries                when glance 10 does not beat base 10 on the first image: pairs trained there with
                       other recipe settings (steps, learning rate, rank)
The judge (glance.shapes) reads each image; the figures are the share passing all checks and
each, mean crispness, mean squared pixel distance to the base's 50-step image of the same caption
and seed, and the pull toward the training image: how often an image takes the training caption's
colour (shape) when its own caption names another colour (shape).

Pairs are trained by `glance train` (real SimpleTuner, CPU) and sampled by glance's own code.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from glance import shapes

SEEDS = (0, 1)
# One image each (caption seen in pretraining, seed); the first is `glance demo`'s.
TRAINING_IMAGES = (
    ("demo", None, None),  # filled from glance.demo
    ("image-2", shapes.Caption("red", "triangle", "black", "on the left"), 3),
    ("image-3", shapes.Caption("green", "circle", "white", None), 5),
)
# 2 + 2 lists from the model's 50-step schedule at 64 px, spaced like the 5 + 5 defaults: two slow steps
# near the top, two fast ones across the rest.
FOUR_STEP_INDICES = ((0, 4), (20, 40))
# Recipe settings tried on the first image, besides the defaults (steps 60, LR 5e-4, rank 16).
TRIES = (
    ("steps 120", ["--steps", "120"]),
    ("lr 1e-3", ["--learning-rate", "1e-3"]),
    ("rank 32", ["--rank", "32"]),
)


def _training_images():
    from glance.demo import TRAINING_CAPTION, TRAINING_SEED

    first = ("demo", TRAINING_CAPTION, TRAINING_SEED)
    return (first, *TRAINING_IMAGES[1:])


def train_pair(work: Path, name: str, caption, seed: int, extra: list[str]) -> Path:
    """`glance train` on one image of the dataset; returns the run folder (reused when up to date)."""
    from glance.demo import DEMO_STEPS
    from glance.smallmodel import RESOLUTION, shipped_model

    folder = work / name
    image = shapes.write_pair(folder / "data", caption, seed)
    cmd = [sys.executable, "-m", "glance", "train", str(image), "--model", str(shipped_model()),
           "--resolution", str(RESOLUTION), "--steps", str(DEMO_STEPS), "--device", "cpu",
           "-o", str(folder / "output"), "--config-dir", str(folder / "config"), *extra]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=folder)
    if proc.returncode != 0:
        raise SystemExit(f"glance train ({name}) failed:\n{proc.stderr[-3000:]}")
    print(f"  pair {name}: trained in {time.perf_counter() - started:.0f} s", flush=True)
    return folder / "output"


def four_step_lists() -> list[str]:
    from glance.families import FAMILIES, model_schedule
    from glance.schedule import NUM_TRAIN_TIMESTEPS, base_schedule
    from glance.smallmodel import RESOLUTION, shipped_model

    family = FAMILIES["flux"]
    sigmas = base_schedule(family, model_schedule(str(shipped_model()), family), RESOLUTION, RESOLUTION)
    slow, fast = ([f"{sigmas[i] * NUM_TRAIN_TIMESTEPS:.4f}" for i in indices] for indices in FOUR_STEP_INDICES)
    return ["--slow-timesteps", ",".join(slow), "--fast-timesteps", ",".join(fast)]


# --- rendering --------------------------------------------------------------------------------


def glance_images(run_dir: Path, out: Path, prompts: list[str]) -> dict:
    """`glance infer`'s own path for every prompt x seed; {(prompt, seed): (image, seconds)}."""
    from PIL import Image

    from glance.infer import options_from_manifest, run_infer
    from glance.progress import Reporter

    options = options_from_manifest(run_dir, prompts=prompts, seeds=list(SEEDS), out=out / "glance.png",
                                    device="cpu", force=True)  # fmt: skip
    images: dict = {}
    for result in run_infer(options, Reporter(quiet=True)).images:
        with Image.open(result.image) as picture:
            images[(result.prompt, result.seed)] = (picture.convert("RGB"), result.seconds)
    return images


def base_images(prompts: list[str], steps_list=(50, 10, 4)) -> dict:
    """The base model at its own N-step schedule, as `glance infer --compare N` renders it (guidance 1, the
    guidance glance samples FLUX at); {steps: {(prompt, seed): (image, seconds)}}."""
    import torch
    from diffusers import FluxPipeline

    from glance.smallmodel import RESOLUTION, shipped_model

    pipe = FluxPipeline.from_pretrained(str(shipped_model()), dtype=torch.float32, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    renders: dict = {}
    for steps in steps_list:
        for prompt in prompts:
            for seed in SEEDS:
                started = time.perf_counter()
                generator = torch.Generator("cpu").manual_seed(seed)
                image = pipe(prompt, num_inference_steps=steps, guidance_scale=1.0, height=RESOLUTION,
                             width=RESOLUTION, generator=generator).images[0]  # fmt: skip
                renders.setdefault(steps, {})[(prompt, seed)] = (image, time.perf_counter() - started)
    return renders


def exact_base_images(run_dir: Path, prompts: list[str]) -> dict:
    """The base model on the pair's trained sigmas, no LoRA, through the same exact scheduler glance uses."""
    import torch
    from diffusers import FluxPipeline

    from glance.manifest import load_manifest
    from glance.sampler import exact_scheduler

    manifest = load_manifest(run_dir / "glance.json")
    pipe = FluxPipeline.from_pretrained(manifest.model, dtype=torch.float32, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = exact_scheduler(pipe.scheduler.config)
    sigmas = manifest.lists.sigmas
    images = {}
    for prompt in prompts:
        for seed in SEEDS:
            started = time.perf_counter()
            image = pipe(prompt, sigmas=sigmas, num_inference_steps=len(sigmas), guidance_scale=1.0,
                         height=manifest.resolution, width=manifest.resolution,
                         generator=torch.Generator("cpu").manual_seed(seed)).images[0]  # fmt: skip
            images[(prompt, seed)] = (image, time.perf_counter() - started)
    return images


def recipe_images(run_dir: Path, prompts: list[str]) -> dict:
    """../shared/seed's two calls, as published (benchmarks/recipe.py), per prompt x seed."""
    import torch
    from recipe import fast_call, recipe_pipeline, recipe_sigmas, slow_call

    from glance.manifest import load_manifest

    manifest = load_manifest(run_dir / "glance.json")
    slow_sigmas, fast_sigmas = recipe_sigmas(manifest)
    pipes = {phase: recipe_pipeline(manifest.model, run_dir / f"glance-{phase}") for phase in ("slow", "fast")}
    images = {}
    for prompt in prompts:
        for seed in SEEDS:
            started = time.perf_counter()
            generator = torch.Generator("cpu").manual_seed(seed)
            latents = slow_call(pipes["slow"], prompt, slow_sigmas, generator, manifest.resolution)
            image = fast_call(pipes["fast"], prompt, fast_sigmas, latents, generator, manifest.resolution)
            images[(prompt, seed)] = (image, time.perf_counter() - started)
    return images


# --- scoring ----------------------------------------------------------------------------------


def score(name: str, images: dict, reference: dict, training=None, demo_prompts=()) -> dict:
    """The judge's figures for one row; `images` and `reference` map (prompt, seed) -> (image, seconds)."""
    import numpy as np

    verdicts, distances, seconds = [], [], []
    pulls = {"colour": [], "shape": []}
    demo_passed = 0
    for (prompt, seed), (image, took) in images.items():
        caption = shapes.Caption.parse(prompt)
        verdict = shapes.judge(image, caption)
        verdicts.append(verdict)
        seconds.append(took)
        ref = np.asarray(reference[(prompt, seed)][0], dtype=np.float32) / 255
        distances.append(float(((np.asarray(image, dtype=np.float32) / 255 - ref) ** 2).mean()))
        if training is not None:
            for attribute in pulls:
                if getattr(caption, attribute) != getattr(training, attribute):
                    pulls[attribute].append(verdict.seen[attribute] == getattr(training, attribute))
        if seed == SEEDS[0] and caption in demo_prompts:
            demo_passed += verdict.passed
    row = {"name": name, **shapes.summarize(verdicts), "mse_to_base50": round(float(np.mean(distances)), 5),
           "seconds_per_image": round(float(np.mean(seconds)), 3), "demo_prompts_passed": demo_passed}  # fmt: skip
    if training is not None:
        for attribute, outcomes in pulls.items():
            row[f"pull_{attribute}"] = round(sum(outcomes) / max(1, len(outcomes)), 4)
        row["training_caption"] = training.text
    return row


def bench_quality(work: Path, tries: bool = True, base_only: bool = False) -> dict:
    from glance.demo import DEMO_PROMPTS, DEMO_STEPS

    work.mkdir(parents=True, exist_ok=True)
    prompts = [caption.text for caption in shapes.held_out_captions()]
    started = time.perf_counter()
    print(f"quality: {len(prompts)} held-out captions x {len(SEEDS)} seeds", flush=True)
    images = _training_images()
    demo_caption = images[0][1]

    # The model first, before anything is built on it.
    bases = base_images(prompts)
    reference = bases[50]
    rows = [score(f"base {steps} steps", renders, reference, demo_caption, DEMO_PROMPTS)
            for steps, renders in bases.items()]  # fmt: skip
    result = {
        "model": "glance/models/shapes-flux",
        "prompts": len(prompts),
        "seeds": list(SEEDS),
        "pair_steps": DEMO_STEPS,
        "rows": rows,
    }
    print_quality(result)
    if base_only:
        return {**result, "seconds": round(time.perf_counter() - started)}

    pairs = {name: (caption, train_pair(work / "pairs", name, caption, seed, [])) for name, caption, seed in images}
    demo_run = pairs["demo"][1]
    four = train_pair(work / "pairs", "demo-2+2", demo_caption, images[0][2], four_step_lists())

    def glance_row(name: str, run_dir: Path, caption) -> dict:
        return _glance_row(work, name, run_dir, caption, prompts, reference)

    rows.append(score("base on glance's 10 sigmas, no LoRA", exact_base_images(demo_run, prompts), reference,
                      demo_caption, DEMO_PROMPTS))  # fmt: skip
    for name, (caption, run_dir) in pairs.items():
        rows.append(glance_row(f"10 steps ({name})", run_dir, caption))
        rows.append(score(f"recipe 2 calls ({name})", recipe_images(run_dir, prompts), reference, caption,
                          DEMO_PROMPTS))  # fmt: skip
    rows.append(glance_row("2+2 steps (demo)", four, demo_caption))
    by_name = {row["name"]: row for row in rows}
    beaten = by_name["glance 10 steps (demo)"]["all"] > by_name["base 10 steps"]["all"]
    if tries and not beaten:
        rows += try_rows(work, prompts, reference)
    return {
        **result,
        "training_images": {name: caption.text for name, (caption, _) in pairs.items()},
        "four_step_indices": FOUR_STEP_INDICES,
        "rows": rows,
        "seconds": round(time.perf_counter() - started),
    }


def try_rows(work: Path, prompts: list[str], reference: dict) -> list[dict]:
    """Pairs trained on the demo's image with each of TRIES' recipe settings, rendered by glance at 10 steps."""
    _, caption, seed = _training_images()[0]
    rows = []
    for label, extra in TRIES:
        run_dir = train_pair(work / "pairs", "demo-" + label.replace(" ", "-"), caption, seed, extra)
        rows.append(_glance_row(work, f"10 steps (demo, {label})", run_dir, caption, prompts, reference))
    return rows


def bench_tries(work: Path) -> list[dict]:
    """The TRIES rows alone, against a fresh base 50 reference (`quality.py --tries`)."""
    prompts = [caption.text for caption in shapes.held_out_captions()]
    return try_rows(work, prompts, base_images(prompts, steps_list=(50,))[50])


def _glance_row(work: Path, name: str, run_dir: Path, caption, prompts: list[str], reference: dict) -> dict:
    from glance.demo import DEMO_PROMPTS

    renders = glance_images(run_dir, work / "renders" / name.replace(" ", "-"), prompts)
    return score(f"glance {name}", renders, reference, caption, DEMO_PROMPTS)


def bench_eval(work: Path, seeds=(0, 1, 2), pairs=("demo", "image-3")) -> dict:
    """`glance eval --scorer judge` (glance/eval.py, the same code) over the shapes model's held-out and open
    captions, with the pairs trained on a placed caption (the demo's) and on an open one (image-3)."""
    from glance.eval import run_eval
    from glance.eval_plan import EvalOptions

    runs = [train_pair(work / "pairs", name, caption, seed, []) for name, caption, seed in _training_images()
            if name in pairs]  # fmt: skip
    options = EvalOptions(runs=runs, seeds=list(seeds), scorers=["judge"], out=work / "eval", cache=work / "eval-cache",
                          device="cpu", force=True)  # fmt: skip
    result = run_eval(options)
    print(result.table, flush=True)
    report = result.report
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": "glance eval " + " ".join(f"-o {run.parent.name}" for run in runs)
        + f" --scorer judge --seeds {seeds[0]}-{seeds[-1]}",
        "prompts": report["prompts"],
        "seeds": report["seeds"],
        "columns": [{"name": c["name"], "seconds_per_image": c["seconds_per_image"], "mean": c["mean"]}
                    for c in report["columns"]],  # fmt: skip
        "comparisons": report["comparisons"],
        "verdict": report["verdict"],
    }


def merge_rows(latest: Path, rows: list[dict]) -> None:
    """Put `rows` into latest.json's quality table, replacing rows of the same name; the run is dated."""
    import json

    results = json.loads(latest.read_text())
    quality = results["quality"]
    names = {row["name"] for row in rows}
    quality["rows"] = [row for row in quality["rows"] if row["name"] not in names] + rows
    quality["tries_date"] = time.strftime("%Y-%m-%d %H:%M")
    latest.write_text(json.dumps(results, indent=2) + "\n")


def print_quality(result: dict) -> None:
    print(f"\nquality: {result['prompts']} held-out captions x {len(result['seeds'])} seeds "
          f"(pairs: {result['pair_steps']} steps per phase)")  # fmt: skip
    header = ("row", "all", "bg", "colour", "shape", "place", "crisp", "mse→50", "pull c/s", "s/img")
    print(f"{header[0]:<44}" + "".join(f"{cell:>10}" for cell in header[1:]))
    for row in result["rows"]:
        pull = f"{row['pull_colour']:.2f}/{row['pull_shape']:.2f}" if "pull_colour" in row else ""
        cells = [f"{row['all']:.2f}", f"{row['background']:.2f}", f"{row['colour']:.2f}", f"{row['shape']:.2f}",
                 f"{row['place']:.2f}", f"{row['crispness']:.2f}", f"{row['mse_to_base50']:.5f}", pull,
                 f"{row['seconds_per_image']:.2f}"]  # fmt: skip
        print(f"{row['name']:<44}" + "".join(f"{cell:>10}" for cell in cells))


if __name__ == "__main__":
    # .venv/bin/python benchmarks/quality.py [--base-only]: the model alone, quickly;
    # .venv/bin/python benchmarks/quality.py --tries: the TRIES rows only, merged into latest.json.
    here = Path(__file__).resolve().parent
    if "--eval" in sys.argv:  # .venv/bin/python benchmarks/quality.py --eval: `glance eval`, into latest.json
        import json

        measured = bench_eval(here / "work" / "quality")
        latest = here / "latest.json"
        results = json.loads(latest.read_text())
        results["quality"]["eval"] = measured
        latest.write_text(json.dumps(results, indent=2) + "\n")
    elif "--tries" in sys.argv:
        from glance.demo import DEMO_STEPS

        tried = bench_tries(here / "work" / "quality")
        merge_rows(here / "latest.json", tried)
        held_out = len(shapes.held_out_captions())
        print_quality({"prompts": held_out, "seeds": list(SEEDS), "pair_steps": DEMO_STEPS, "rows": tried})
    else:
        print_quality(bench_quality(here / "work" / "quality", base_only="--base-only" in sys.argv))
