"""The whole path on a tiny model: build it offline, train both LoRAs on CPU, sample them.

Every stage is the real one (SimpleTuner trains, diffusers samples); only the model is tiny and
random, so the demo runs anywhere in a few minutes with no download and no GPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_WORKDIR = Path("glance-demo")
DEMO_STEPS = 8
DEMO_RESOLUTION = 128  # the tiny VAE does not downsample: 128 px is already 4096 image tokens
DEMO_PROMPT = "a red circle and a blue square on a warm gradient"


@dataclass
class DemoResult:
    workdir: Path
    model: Path
    manifest: Path
    loras: dict[str, Path]
    image: Path
    seconds: dict[str, float] = field(default_factory=dict)  # per stage


def run_demo(
    workdir: Path = DEFAULT_WORKDIR,
    *,
    steps: int = DEMO_STEPS,
    prompt: str = DEMO_PROMPT,
    reporter=None,
    emit: Callable[[str], None] = print,
) -> DemoResult:
    """Run (or resume) the demo in `workdir`; stages that are already done are reused."""
    from glance.infer import options_from_manifest, run_infer
    from glance.progress import Reporter, library_output
    from glance.tiny import build_tiny_model, write_sample_pair
    from glance.train import TrainSettings, plan_run, train

    reporter = reporter or Reporter()
    workdir = Path(workdir).resolve()
    seconds: dict[str, float] = {}

    def stage(name: str, work):
        start = time.perf_counter()
        value = work()
        seconds[name] = time.perf_counter() - start
        emit(f"[{name}] {seconds[name]:.1f} s")
        return value

    with library_output(reporter.verbose):
        model = stage("tiny model", lambda: build_tiny_model("flux", workdir / "tiny-flux"))
    image = stage("sample pair", lambda: write_sample_pair(workdir / "data", size=DEMO_RESOLUTION))
    settings = TrainSettings(
        image=image,
        model=str(model),
        resolution=DEMO_RESOLUTION,
        steps=steps,
        output_dir=workdir / "output",
        config_dir=workdir / "config",
        device="cpu",
    )
    plan = stage("check + plan", lambda: plan_run(settings))
    stage("train (SimpleTuner, 2 phases)", lambda: train(plan, reporter=reporter))
    # The demo's own image in its own folder: replacing it on a re-run is what the user asked for.
    out = workdir / "glance.png"
    options = options_from_manifest(plan.output_dir, prompt=prompt, out=out, device="cpu", force=True)
    result = stage("infer (diffusers, 1 pipeline)", lambda: run_infer(options, reporter))
    return DemoResult(
        workdir=workdir,
        model=model,
        manifest=plan.manifest_path,
        loras={phase: plan.lora_dir(phase) for phase in ("slow", "fast")},
        image=result.image,
        seconds=seconds,
    )
