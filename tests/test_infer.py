"""glance infer: one real diffusers pipeline call per image, on tiny models of every family.

What is checked is what ran: the sigmas the scheduler stepped from, and the adapter active at each step.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.tiny_models import SIZE, write_finished_run
from typer.testing import CliRunner

from glance import __version__
from glance.batch import base_image_path
from glance.cli import app
from glance.families import FAMILIES, GlanceError, model_schedule
from glance.files import file_sha256
from glance.infer import options_from_manifest, run_infer
from glance.infer_options import InferOptions
from glance.manifest import WEIGHTS_NAME
from glance.records import read_png_parameters
from glance.sampler import exact_scheduler
from glance.schedule import base_schedule, default_lists
from glance.smallmodel import RESOLUTION, shipped_model
from glance.tiny import load_transformer, write_random_lora

PROMPT = "a red circle and a blue square on a warm gradient"


def infer(tiny_family, tmp_path, **overrides):
    options = {
        "prompt": PROMPT,
        "model": str(tiny_family.model),
        "lists": tiny_family.lists,
        "slow_lora": tiny_family.slow,
        "fast_lora": tiny_family.fast,
        "out": tmp_path / "glance.png",
        "width": SIZE,
        "height": SIZE,
        "device": "cpu",
    }
    return run_infer(InferOptions(**{**options, **overrides}))


def test_a_size_the_model_cannot_render_is_said(tiny, tmp_path):
    from glance.families import FAMILIES as KNOWN
    from glance.families import model_schedule
    from glance.progress import Reporter

    model = tiny("flux")
    multiple = KNOWN["flux"].patch_size * model_schedule(str(model.model), KNOWN["flux"]).vae_scale_factor
    said = []
    reporter = Reporter(quiet=True)
    reporter.result = said.append
    options = {"prompt": PROMPT, "model": str(model.model), "lists": model.lists, "slow_lora": model.slow,
               "fast_lora": model.fast, "out": tmp_path / "odd.png", "width": SIZE + 1, "height": SIZE, "device": "cpu"}
    run = run_infer(InferOptions(**options), reporter)  # fmt: skip
    note = f"note: flux renders sizes in multiples of {multiple}: {SIZE + 1}x{SIZE} becomes {SIZE}x{SIZE}"
    assert note in said and run.images[0].summary["width"] == SIZE


def pixels(path):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB").tobytes()


@pytest.mark.parametrize("family", FAMILIES)
def test_runs_the_trained_sigmas_with_slow_then_fast(tiny, family, tmp_path):
    model = tiny(family)
    run = infer(model, tmp_path, compare=4)
    result = run.images[0]

    executed = [step.sigma for step in result.trace]
    assert executed == model.lists.sigmas  # exactly, as float32: no shift, no terminal stretch
    assert 0.0 not in executed and result.trace[-1].sigma_next == 0.0  # 0 only after the last step
    assert [step.sigma_next for step in result.trace[:-1]] == executed[1:]
    switch = len(model.lists.slow)
    assert [step.adapters for step in result.trace] == [("slow",)] * switch + [("fast",)] * len(model.lists.fast)
    assert [step.step for step in result.trace] == list(range(len(executed)))

    # The base model ran its own scheduler (the family's shifted default schedule), without LoRAs.
    base = result.base
    assert base.image == base_image_path(result.image, 4) == tmp_path / "glance-base4.png"
    expected = base_schedule(FAMILIES[family], model_schedule(str(model.model), FAMILIES[family]), SIZE, SIZE, 4)
    assert [step.sigma for step in base.trace] == pytest.approx(expected, abs=1e-6)
    assert all(step.adapters == () for step in base.trace)
    assert pixels(result.image) != pixels(base.image)

    # SimpleTuner's alpha (4 x rank, in the file's metadata) is applied: scale alpha / rank.
    for name, folder in (("slow", model.slow), ("fast", model.fast)):
        expected = {"path": str(folder), "rank": 4, "alpha": 16, "alpha_from": "file metadata", "scale": 4.0,
                    "sha256": file_sha256(folder / WEIGHTS_NAME)}  # what identifies the pair when the run moves
        assert result.summary["loras"][name] == expected

    assert read_png_parameters(result.image) == result.summary
    assert read_png_parameters(base.image) == base.summary


# One image pinned across refactors of the sampling side (issue 16 split glance/infer.py into the LoRA
# files, the diffusers calls, the PNG records and the loop): tests/data/pinned-glance.png was rendered
# before the split, and on the machine that rendered it the image comes back bit for bit (pixel sha256
# below); it is rendered again when the shipped model's weights change (last: the 7,500-step model).
# Another CPU may round floats differently, so elsewhere a difference of 2/255 at most is allowed:
# a wrong sigma, adapter or strength moves pixels by far more than that.
PINNED_IMAGE = Path(__file__).parent / "data" / "pinned-glance.png"
PINNED_PIXELS_SHA256 = "8db58ab1b138c10038352165216a8742182acc60a3f569619f13bfe7bd6aac1b"


def test_pinned_image_renders_again(tmp_path):
    import hashlib

    import numpy as np
    from PIL import Image

    # The shipped small model, not a `tiny` one: the tiny tokenizers are trained afresh in every process
    # (the tokenizers library orders equal-count merges by a seeded hash), so their token ids vary.
    model = shipped_model()
    lists = default_lists(FAMILIES["flux"], model_schedule(str(model), FAMILIES["flux"]), RESOLUTION)
    slow = write_random_lora(tmp_path / "slow", load_transformer(model), "flux", seed=1)
    fast = write_random_lora(tmp_path / "fast", load_transformer(model), "flux", seed=2)
    options = InferOptions(
        prompt="a red circle on a white background", seed=7, model=str(model), lists=lists, slow_lora=slow,
        fast_lora=fast, out=tmp_path / "pinned.png", width=RESOLUTION, height=RESOLUTION, device="cpu",
    )  # fmt: skip
    with Image.open(run_infer(options).image) as image, Image.open(PINNED_IMAGE) as pinned:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
        reference = np.asarray(pinned.convert("RGB"), dtype=np.int16)
    assert hashlib.sha256(reference.astype(np.uint8).tobytes()).hexdigest() == PINNED_PIXELS_SHA256
    assert pixels.shape == reference.shape == (RESOLUTION, RESOLUTION, 3)
    assert np.abs(pixels - reference).max() <= 2


def test_exact_scheduler_ignores_every_respacing_setting():
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler

    shifting = FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, shift_terminal=0.02, use_karras_sigmas=True, invert_sigmas=True
    )
    scheduler = exact_scheduler(shifting.config)
    sigmas = [1.0, 0.979, 0.9575, 0.8867, 0.02]
    scheduler.set_timesteps(sigmas=sigmas, mu=1.15)
    assert scheduler.sigmas.tolist() == torch.tensor([*sigmas, 0.0], dtype=torch.float32).tolist()


def test_png_record(tiny, tmp_path):
    from PIL import Image

    model = tiny("qwen_image")
    result = infer(model, tmp_path, seed=3, prompt="un cercle rouge à côté d'un carré").images[0]
    record = read_png_parameters(result.image)
    assert record["prompt"] == "un cercle rouge à côté d'un carré"
    assert record["seed"] == 3 and record["model"] == str(model.model) and record["family"] == "qwen_image"
    assert record["negative_prompt"] == " " and record["true_cfg"] == 5.0 and record["guidance"] is None
    assert record["sigmas"] == model.lists.sigmas
    assert record["slow_timesteps"] == list(model.lists.slow) and record["fast_timesteps"] == list(model.lists.fast)
    assert [step["adapters"] for step in record["steps"]] == [["slow"]] * 5 + [["fast"]] * 5
    assert (record["width"], record["height"]) == (SIZE, SIZE)
    assert record["glance_version"] == __version__
    with Image.open(result.image) as image:
        parameters = image.text["parameters"]
    assert parameters.startswith("un cercle rouge à côté d'un carré\nNegative prompt:  \nSteps: 10, ")
    assert "Seed: 3" in parameters and "True CFG scale: 5.0" in parameters


def test_same_seed_same_image(tiny, tmp_path):
    model = tiny("flux")
    first = infer(model, tmp_path, out=tmp_path / "first.png")
    again = infer(model, tmp_path, out=tmp_path / "again.png")
    other_seed = infer(model, tmp_path, out=tmp_path / "other.png", seed=1)
    assert again.image.read_bytes() == first.image.read_bytes()
    assert pixels(other_seed.image) != pixels(first.image)
    assert first.images[0].summary["guidance"] == FAMILIES["flux"].recipe.guidance


def test_alpha_of_a_lora_without_metadata_comes_from_simpletuner_config(tiny, tmp_path):
    """SimpleTuner's final save has no adapter metadata, so diffusers alone would run it at scale 1."""
    model = tiny("flux")
    plain = write_random_lora(tmp_path / "plain", load_transformer(model.model), "flux", seed=1, with_metadata=False)
    result = infer(model, tmp_path, out=tmp_path / "plain.png", slow_lora=plain).images[0]
    assert result.summary["loras"]["slow"] == {
        "path": str(plain),
        "sha256": file_sha256(plain / WEIGHTS_NAME),
        "rank": 4,
        "alpha": 4,
        "alpha_from": "none: alpha = rank assumed",
        "scale": 1.0,
    }

    (plain / "simpletuner_config.json").write_text(json.dumps({"lora_rank": 4, "lora_alpha": 16.0}))
    result = infer(model, tmp_path, out=tmp_path / "config.png", slow_lora=plain).images[0]
    assert result.summary["loras"]["slow"] == {
        "path": str(plain),
        "sha256": file_sha256(plain / WEIGHTS_NAME),
        "rank": 4,
        "alpha": 16.0,
        "alpha_from": "simpletuner_config.json",
        "scale": 4.0,
    }
    # The same weights with the alpha in the file's metadata sample the same image.
    with_metadata = infer(model, tmp_path, out=tmp_path / "metadata.png")
    assert pixels(result.image) == pixels(with_metadata.image)

    (plain / "simpletuner_config.json").write_text(json.dumps({"lora_rank": 8, "lora_alpha": 32.0}))
    with pytest.raises(GlanceError, match="says lora_rank 8, but .* has rank 4"):
        infer(model, tmp_path, out=tmp_path / "mismatch.png", slow_lora=plain)


# Bad input: one clear message each, and no image left behind.


def test_no_manifest(tmp_path):
    with pytest.raises(GlanceError, match=r"no run manifest at .*glance.json; run `glance train` first or pass --slow"):
        options_from_manifest(tmp_path / "output", prompt=PROMPT)
    with pytest.raises(GlanceError, match="pass --model and --slow-timesteps and --fast-timesteps too"):
        options_from_manifest(tmp_path / "output", prompt=PROMPT, slow_lora=tmp_path, fast_lora=tmp_path)


def test_lora_folder_without_weights(tiny, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(GlanceError, match="the fast LoRA folder .*empty has no pytorch_lora_weights.safetensors"):
        infer(tiny("flux"), tmp_path, fast_lora=tmp_path / "empty")
    with pytest.raises(GlanceError, match="the slow LoRA folder .*missing does not exist"):
        infer(tiny("flux"), tmp_path, slow_lora=tmp_path / "missing")
    assert not (tmp_path / "glance.png").exists()


def test_lora_for_a_differently_sized_transformer(tiny, tmp_path):
    from diffusers import FluxTransformer2DModel

    narrower = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[2, 2, 4],
    )
    other = write_random_lora(tmp_path / "other", narrower, "flux", seed=1)
    with pytest.raises(
        GlanceError,
        match=r"does not fit .*: (single_)?transformer_blocks\.0\.attn\.to_\w+ has 32 -> 32 features, "
        r"the LoRA 16 -> 16 \(made for another model\?\)",
    ):
        infer(tiny("flux"), tmp_path, slow_lora=other)
    with pytest.raises(GlanceError, match="does not fit"):  # a Qwen-Image LoRA on FLUX
        infer(tiny("flux"), tmp_path, fast_lora=tiny("qwen_image").fast)
    assert not (tmp_path / "glance.png").exists()


def test_weights_diffusers_did_not_load_as_written_are_refused(tiny, tmp_path, monkeypatch):
    from diffusers import FluxPipeline

    load = FluxPipeline.load_lora_weights

    def load_then_lose_the_weights(self, *args, **kwargs):  # what a silently mismatched load looks like
        load(self, *args, **kwargs)
        for name, parameter in self.transformer.named_parameters():
            if ".lora_B." in name:
                parameter.data.zero_()

    monkeypatch.setattr(FluxPipeline, "load_lora_weights", load_then_lose_the_weights)
    with pytest.raises(GlanceError, match="diffusers loaded other weights than .* holds for"):
        infer(tiny("flux"), tmp_path)
    assert not (tmp_path / "glance.png").exists()


def test_lora_not_in_diffusers_format(tiny, tmp_path):
    import torch
    from safetensors.torch import save_file

    (tmp_path / "kohya").mkdir()
    save_file(
        {"lora_unet_double_blocks_0.lora_down.weight": torch.zeros(4, 32)},
        tmp_path / "kohya" / "pytorch_lora_weights.safetensors",
    )
    with pytest.raises(GlanceError, match="is not a diffusers-format transformer LoRA"):
        infer(tiny("flux"), tmp_path, slow_lora=tmp_path / "kohya")


def test_unwritable_out_fails_before_loading(tiny, tmp_path, monkeypatch):
    import glance.render

    def no_loading(*args):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(glance.render, "load_pipeline", no_loading)
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(GlanceError, match="a-file is not a folder"):
        infer(tiny("flux"), tmp_path, out=tmp_path / "a-file" / "glance.png")
    (tmp_path / "folder.png").mkdir()  # a folder, whatever its name, gets glance.png inside it; so does a new one
    folder = options_from_manifest(tmp_path, prompt=PROMPT, model="m", lists=tiny("flux").lists,
                                   slow_lora=tmp_path, fast_lora=tmp_path, out=tmp_path / "folder.png")  # fmt: skip
    assert folder.out == tmp_path / "folder.png" / "glance.png"
    renders = options_from_manifest(tmp_path, prompt=PROMPT, model="m", lists=tiny("flux").lists,
                                    slow_lora=tmp_path, fast_lora=tmp_path, out=tmp_path / "renders")  # fmt: skip
    assert renders.out == tmp_path / "renders" / "glance.png"
    with pytest.raises(GlanceError, match="give a .png path"):
        infer(tiny("flux"), tmp_path, out=tmp_path / "glance.jpg")
    (tmp_path / "glance.png").write_bytes(b"keep")
    with pytest.raises(GlanceError, match="glance.png exists; pass --force"):
        infer(tiny("flux"), tmp_path)
    assert (tmp_path / "glance.png").read_bytes() == b"keep"
    (tmp_path / "new-base8.png").write_bytes(b"keep")
    with pytest.raises(GlanceError, match="new-base8.png exists; pass --force"):
        infer(tiny("flux"), tmp_path, out=tmp_path / "new.png", compare=8)
    (tmp_path / "new-base8.png").unlink()
    (tmp_path / "new-compare.png").write_bytes(b"keep")
    with pytest.raises(GlanceError, match="new-compare.png exists; pass --force"):
        infer(tiny("flux"), tmp_path, out=tmp_path / "new.png", compare=8)
    (tmp_path / "new-002.png").write_bytes(b"keep")
    with pytest.raises(GlanceError, match="new-002.png exists; pass --force"):  # one of several numbered images
        infer(tiny("flux"), tmp_path, out=tmp_path / "new.png", seeds=[0, 1])
    assert not (tmp_path / "new.png").exists() and not (tmp_path / "new-001.png").exists()


def test_failure_after_sampling_leaves_no_image(tiny, tmp_path, monkeypatch):
    import glance.sampler

    def wrong_trace(trace, lists):
        raise GlanceError("the pipeline stepped through other sigmas")

    monkeypatch.setattr(glance.sampler, "check_trace", wrong_trace)
    with pytest.raises(GlanceError, match="other sigmas"):
        infer(tiny("flux"), tmp_path, compare=2)
    assert list(tmp_path.iterdir()) == []


def test_force_overwrites(tiny, tmp_path):
    (tmp_path / "glance.png").write_bytes(b"old")
    result = infer(tiny("flux"), tmp_path, force=True)
    assert read_png_parameters(result.image)["sigmas"] == tiny("flux").lists.sigmas


# Through the command line, from a run manifest.


def test_cli_from_manifest_prints_json(tiny, tmp_path):
    model = tiny("flux")
    output = write_finished_run(model, tmp_path / "output")
    out = tmp_path / "cli.png"
    args = ["infer", PROMPT, "--output-dir", str(output), "--out", str(out), "--device", "cpu", "--json"]

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    run = json.loads(result.stdout)
    assert run["sheet"] is None and run["load_seconds"] > 0 and run["processes"] == 1
    [image] = run["images"]
    assert image["path"] == str(out) and image["seconds"] > 0 and image["seed"] == 0 and image["prompt"] == PROMPT
    assert 0 < image["denoise_seconds"] < image["seconds"]
    record = image["record"]
    assert record["sigmas"] == model.lists.sigmas
    assert (record["width"], record["height"]) == (SIZE, SIZE)  # the manifest's training resolution
    assert record["guidance"] == 1.0  # the manifest's train_guidance
    assert record["loras"]["fast"]["path"] == str(model.fast)
    assert record == read_png_parameters(out)

    again = CliRunner().invoke(app, args)
    assert again.exit_code == 1
    assert again.stderr.strip() == f"glance: error: {out} exists; pass --force to overwrite it"

    table = CliRunner().invoke(app, [*args[:-1], "--force", "--slow", str(model.fast)])
    assert table.exit_code == 0, table.output
    assert "   0  1.0000 -> " in table.stdout and f"wrote {out} (10 steps" in table.stdout


def test_module_tops_stay_light():
    code = (
        "import sys, glance.cli, glance.infer, glance.tiny; "
        "print([m for m in ('torch', 'diffusers', 'transformers', 'PIL') if m in sys.modules])"
    )
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    )
