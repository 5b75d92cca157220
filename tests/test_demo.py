"""`glance demo`: the README's main job, end to end on the shipped shapes model."""

import json

from PIL import Image

from glance.demo import DEMO_COMPARE, DEMO_PROMPTS
from glance.manifest import load_manifest
from glance.records import read_png_parameters
from glance.sheet import read_sheet_layout
from glance.smallmodel import RESOLUTION


def test_demo_ends_with_judged_images_and_a_sheet(trained_run):
    samples = trained_run.samples
    images = sorted(samples.glob("glance-00?.png"))
    assert len(images) == len(DEMO_PROMPTS)
    manifest = load_manifest(trained_run.output / "glance.json")
    assert manifest.complete and manifest.model == str(trained_run.model)  # the folder it trained on
    for image, caption in zip(images, DEMO_PROMPTS, strict=True):
        with Image.open(image) as img:
            assert img.size == (RESOLUTION, RESOLUTION)
        record = read_png_parameters(image)
        assert record["prompt"] == caption.text
        assert record["sigmas"] == manifest.lists.sigmas  # the exact trained sigmas, recorded as they ran
        assert [step["adapters"] for step in record["steps"]] == [["slow"]] * 5 + [["fast"]] * 5
        for lora in record["loras"].values():  # sampled at the trained strength, alpha / rank = 4
            assert lora["scale"] == 4.0 and lora["alpha_from"] == "file metadata"
        for steps in DEMO_COMPARE:  # the base model at each step count, on its own schedule
            base = read_png_parameters(image.with_name(f"{image.stem}-base{steps}.png"))
            assert (base["kind"], len(base["steps"]), base["prompt"]) == ("base", steps, caption.text)
    # The sheet: base 50, base 10, glance, in that order, a row per caption.
    layout = read_sheet_layout(samples / "glance-compare.png")
    assert (layout["rows"], layout["columns"]) == (len(DEMO_PROMPTS), 3)
    first_row = sorted((t for t in layout["tiles"] if t["row"] == 0), key=lambda t: t["column"])
    assert [t["image"].rsplit("/", 1)[1] for t in first_row] == ["glance-001-base50.png", "glance-001-base10.png",
                                                                 "glance-001.png"]  # fmt: skip
    # The judge's report, and its lines on stdout.
    report = json.loads((samples / "demo.json").read_text())
    assert [c["name"] for c in report["columns"]] == ["base 50 steps", "base 10 steps", "glance 10 steps"]
    assert len(report["images"]) == 3 * len(DEMO_PROMPTS)
    for column in report["columns"]:
        assert f"{column['name']:<16} judge " in trained_run.demo.stdout
    for stage in ("[train (SimpleTuner, 2 phases)]", "[infer (diffusers, 1 pipeline)]"):
        assert stage in trained_run.output_text
    assert f"sheet:    {samples / 'glance-compare.png'}" in trained_run.demo.stdout
    # glance's own lines only: none of diffusers' / transformers' loading, saving or step bars
    for bar in ("%|", "it/s]", "Loading pipeline components", "Writing model shards", "Loading weights"):
        assert bar not in trained_run.output_text, bar


def test_second_demo_reuses_the_trained_pair(trained_run):
    from support.training import STEPS, run_glance

    weights = trained_run.output / "glance-slow" / "pytorch_lora_weights.safetensors"
    before = weights.stat().st_mtime_ns
    verdicts = json.loads((trained_run.samples / "demo.json").read_text())["images"]
    again = run_glance("demo", "--workdir", str(trained_run.root), "--steps", str(STEPS), cwd=trained_run.root)
    assert again.returncode == 0, again.stderr
    assert "slow: up to date" in again.stderr and "fast: up to date" in again.stderr
    assert weights.stat().st_mtime_ns == before
    # the same pair and seeds: the same images, judged the same
    assert json.loads((trained_run.samples / "demo.json").read_text())["images"] == verdicts
