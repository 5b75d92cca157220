"""`glance demo`: the README's main job, end to end on a tiny model."""

from PIL import Image

from glance.infer import read_png_parameters
from glance.manifest import load_manifest


def test_demo_ends_with_an_image_on_disk(trained_run):
    image = trained_run.root / "glance.png"
    with Image.open(image) as img:
        assert img.size == (128, 128)
    record = read_png_parameters(image)
    manifest = load_manifest(trained_run.output / "glance.json")
    assert manifest.complete
    assert record["sigmas"] == manifest.lists.sigmas  # the exact trained sigmas, recorded as they ran
    assert [step["adapters"] for step in record["steps"]] == [["slow"]] * 5 + [["fast"]] * 5
    for lora in record["loras"].values():  # sampled at the trained strength, alpha / rank = 4
        assert lora["scale"] == 4.0 and lora["alpha_from"] == "file metadata"
    for stage in ("[tiny model]", "[train (SimpleTuner, 2 phases)]", "[infer (diffusers, 1 pipeline)]"):
        assert stage in trained_run.output_text
    assert f"image:    {image}" in trained_run.demo.stdout
    # glance's own lines only: none of diffusers' / transformers' loading, saving or step bars
    for bar in ("%|", "it/s]", "Loading pipeline components", "Writing model shards", "Loading weights"):
        assert bar not in trained_run.output_text, bar


def test_second_demo_reuses_everything(trained_run):
    from support.training import STEPS, run_glance

    weights = trained_run.output / "glance-slow" / "pytorch_lora_weights.safetensors"
    before = weights.stat().st_mtime_ns
    again = run_glance("demo", "--workdir", str(trained_run.root), "--steps", str(STEPS), cwd=trained_run.root)
    assert again.returncode == 0, again.stderr
    assert "slow: up to date" in again.stderr and "fast: up to date" in again.stderr
    assert weights.stat().st_mtime_ns == before
