"""`glance configs`: files SimpleTuner accepts, written safely; bad input refused with one line."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glance.cli import app
from glance.run_plan import TrainSettings, plan_run
from glance.schedule import parse_list, to_sigmas
from glance.simpletuner import parser_check
from glance.tiny import write_sample_pair

REPO = Path(__file__).resolve().parent.parent
HUB_MODELS = {
    "flux": "black-forest-labs/FLUX.1-dev",
    "sd3": "stabilityai/stable-diffusion-3.5-medium",
    "qwen_image": "Qwen/Qwen-Image",
    "chroma": "lodestones/Chroma1-HD",
    "z_image": "Tongyi-MAI/Z-Image",
    "flux2": "black-forest-labs/FLUX.2-klein-base-9B",
}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh folder with data/glance.png + data/glance.txt, as the current directory."""
    write_sample_pair(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_cli(*args: str):
    return CliRunner().invoke(app, list(args))


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow  # imports SimpleTuner (~20 s alone)
@pytest.mark.parametrize("family", sorted(HUB_MODELS))
def test_training_configs_pass_simpletuners_parser(workdir, family):
    plan = plan_run(TrainSettings(model=HUB_MODELS[family], device="cuda"))
    for phase, lists in (("slow", plan.lists.slow), ("fast", plan.lists.fast)):
        parsed = parser_check(plan.configs[phase])
        assert parsed.model_family == family
        assert parsed.train_batch_size == 1 and parsed.caption_dropout_probability == 0.0
        assert parsed.max_train_steps == 60 and parsed.num_train_epochs == 0
        assert parsed.lora_alpha == 4 * parsed.lora_rank
        # The timesteps survive the round trip, and SimpleTuner reads them as the sigmas glance samples.
        assert parse_list(parsed.flow_custom_timesteps, phase) == lists
        assert to_sigmas(parse_list(parsed.flow_custom_timesteps, phase)) == getattr(plan.lists, f"{phase}_sigmas")
        # Chroma: no respacing of the list (see test_families.py); Z-Image: the base, never a turbo flavour.
        assert bool(parsed.flow_use_uniform_schedule) == (family == "chroma")
        assert parsed.model_flavour == {"z_image": "base", "flux2": "klein-9b"}.get(family)


@pytest.mark.slow  # imports SimpleTuner
def test_family_keys_pass_simpletuners_parser_and_unset_ones_are_not_written(workdir):
    """model_flavour, flow_use_uniform_schedule and disable_assistant_lora are SimpleTuner's keys; None: not written."""
    config = plan_run(TrainSettings(device="cuda")).configs["slow"]
    assert not {"model_flavour", "flow_use_uniform_schedule", "disable_assistant_lora"} & set(config.to_json())
    keyed = config.model_copy(update={"model_flavour": "dev", "flow_use_uniform_schedule": True,
                                      "disable_assistant_lora": True})  # fmt: skip
    parsed = parser_check(keyed)
    assert parsed.model_flavour == "dev"
    assert parsed.flow_use_uniform_schedule is True and parsed.disable_assistant_lora is True


def test_phase_configs_differ_only_in_output_dataloader_and_timesteps(workdir):
    plan = plan_run(TrainSettings(device="cuda"))
    slow, fast = plan.configs["slow"].to_json(), plan.configs["fast"].to_json()
    assert {k for k in slow if slow[k] != fast[k]} == {"output_dir", "data_backend_config", "flow_custom_timesteps"}


def test_configs_writes_three_files_and_stages_the_pair(workdir):
    result = run_cli("configs", "--out", "config", "--device", "cpu")
    assert result.exit_code == 0, result.output
    ids, caches = set(), set()
    for phase in ("slow", "fast"):
        loader = json.loads((workdir / f"config/multidatabackend-{phase}.json").read_text())
        images = [d for d in loader if d.get("dataset_type", "image") == "image"]
        embeds = [d for d in loader if d.get("dataset_type") == "text_embeds"]
        assert len(images) == 1 and len(embeds) == 1
        image = images[0]
        assert image["type"] == "local" and image["caption_strategy"] == "textfile" and image["id"]
        assert embeds[0]["default"] is True and embeds[0]["id"] != image["id"]
        # Each phase's SimpleTuner runs in its own working folder (output/simpletuner-PHASE): the
        # configs' paths are relative to it. The dataset folder holds exactly the staged pair.
        work = workdir / "output" / f"simpletuner-{phase}"
        staged = work / image["instance_data_dir"]
        assert staged.resolve() == (workdir / "output/dataset").resolve()
        assert sorted(p.name for p in staged.iterdir()) == ["glance.png", "glance.txt"]
        assert (staged / "glance.png").read_bytes() == (workdir / "data/glance.png").read_bytes()
        config = json.loads((workdir / f"config/glance-{phase}.json").read_text())
        assert (work / config["data_backend_config"]).resolve() == (workdir / f"config/multidatabackend-{phase}.json")
        assert (work / config["output_dir"]).resolve() == workdir / "output" / f"glance-{phase}"
        # Nothing two phases at once write is shared: the bucket files are named by the dataset id.
        ids.update({image["id"], embeds[0]["id"]})
        caches.update({(work / image["cache_dir_vae"]).resolve(), (work / embeds[0]["cache_dir"]).resolve()})
    assert len(ids) == 4 and len(caches) == 4
    slow = json.loads((workdir / "config/glance-slow.json").read_text())
    assert slow["mixed_precision"] == "no" and slow["optimizer"] == "torch-adamw"
    assert isinstance(slow["flow_custom_timesteps"], str)
    assert "(cd output/simpletuner-slow && " in result.output
    assert "simpletuner train --env ../../config/glance-slow.json)" in result.output
    # Runnable as printed, without an activated venv: the full path, and its folder (accelerate) first on PATH.
    bin_dir = Path(sys.executable).parent
    assert f'PATH={bin_dir}:"$PATH" ' in result.output and f" {bin_dir}/simpletuner train" in result.output
    assert "_simpletuner_cpu" in result.output  # the CPU shim, as glance train uses it


def test_repo_configs_match_the_defaults(workdir):
    """configs/ holds what `glance configs --device cuda --gpu-memory 48` writes with every other default
    (the card is given so the files do not depend on this machine's GPU: bf16 with gradient checkpointing)."""
    result = run_cli("configs", "--device", "cuda", "--gpu-memory", "48")
    assert result.exit_code == 0, result.output
    for name in ("multidatabackend-slow.json", "multidatabackend-fast.json", "glance-slow.json", "glance-fast.json"):
        assert (workdir / "config" / name).read_text() == (REPO / "configs" / name).read_text(), name


def test_rerun_is_harmless_and_hand_edits_need_force(workdir):
    assert run_cli("configs", "--device", "cpu").exit_code == 0
    assert run_cli("configs", "--device", "cpu").exit_code == 0  # same content: fine
    # A changed option rewrites the files glance wrote itself, as `glance train` does.
    result = run_cli("configs", "--device", "cpu", "--steps", "7")
    assert result.exit_code == 0, result.output
    assert json.loads((workdir / "config/glance-slow.json").read_text())["max_train_steps"] == 7
    # A file edited by hand since is the user's: not overwritten without --force.
    edited = workdir / "config/glance-fast.json"
    edited.write_text(edited.read_text().replace('"seed": 0', '"seed": 3'))
    before = tree(workdir / "config")
    result = run_cli("configs", "--device", "cpu", "--steps", "8")
    assert result.exit_code == 1
    assert "--force" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert tree(workdir / "config") == before
    assert run_cli("configs", "--device", "cpu", "--steps", "8", "--force").exit_code == 0
    assert json.loads(edited.read_text())["max_train_steps"] == 8 and '"seed": 3' not in edited.read_text()


def test_user_lists_and_their_faults(workdir):
    ok = run_cli("configs", "--device", "cpu", "--slow-timesteps", "1000,950", "--fast-timesteps", "0.5,0.1")
    assert ok.exit_code == 1 and "one scale" in ok.stderr
    ok = run_cli("configs", "--device", "cpu", "--slow-timesteps", "1000,950")
    assert ok.exit_code == 1 and "both" in ok.stderr
    ok = run_cli("configs", "--device", "cpu", "--slow-timesteps", "1000,950", "--fast-timesteps", "700,50")
    assert ok.exit_code == 0, ok.output
    assert json.loads((workdir / "config/glance-fast.json").read_text())["flow_custom_timesteps"] == "700.0,50.0"


def _bad_pair(workdir, case):
    data = workdir / "data"
    if case == "missing image":
        (data / "glance.png").unlink()
    elif case == "not an image":
        (data / "glance.png").write_bytes(b"this is text, not a PNG")
    elif case == "too small":
        from PIL import Image

        Image.new("RGB", (32, 96)).save(data / "glance.png")
    elif case == "missing caption":
        (data / "glance.txt").unlink()
    elif case == "empty caption":
        (data / "glance.txt").write_text("  \n")
    elif case == "caption not utf-8":
        (data / "glance.txt").write_bytes(b"caf\xe9")


@pytest.mark.parametrize(
    ("case", "args", "message"),
    [
        ("missing image", [], "image not found"),
        ("not an image", [], "not a readable image"),
        ("too small", [], "at least 64 px"),
        ("missing caption", [], "caption not found"),
        ("empty caption", [], "is empty"),
        ("caption not utf-8", [], "not UTF-8"),
        (None, ["--model", "someone/unknown-model"], "cannot tell the model family"),
        (None, ["--family", "sdxl"], "Invalid value"),
        (None, ["--out", "data/glance.png/config"], "not a folder"),
        (None, ["--model", "Qwen/Qwen-Image", "--family", "flux"], "does not match"),
        (None, ["--model", "/no/such/folder", "--family", "flux"], "model not found: /no/such/folder"),
        (None, ["--learning-rate", "0"], "--learning-rate: Input should be greater than 0"),
    ],
)
def test_bad_input_one_line_nothing_written(workdir, case, args, message):
    if case:
        _bad_pair(workdir, case)
    before = tree(workdir)
    result = run_cli("configs", "--device", "cpu", *args)
    assert result.exit_code != 0
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert tree(workdir) == before


def test_bad_input_through_the_real_entry_point(workdir):
    """One line on stderr from the installed `glance` script, exit 1, no traceback."""
    (workdir / "data/glance.txt").unlink()
    proc = subprocess.run(
        [sys.executable, "-m", "glance", "configs", "--device", "cpu"], capture_output=True, text=True, cwd=workdir
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "caption not found" in proc.stderr
    assert not (workdir / "config").exists() and not (workdir / "output").exists()


@pytest.mark.parametrize(
    "args", [["--help"], ["configs", "--help"], ["train", "--help"], ["infer", "--help"], ["push", "--help"]]
)
def test_help_does_not_import_heavy_libraries(args):
    code = (
        "import sys; from glance.cli import main; sys.argv = ['glance', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'diffusers', 'simpletuner', 'transformers') if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)"
    )
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert "Usage" in proc.stdout
    assert "HEAVY []" in proc.stderr


def test_transparent_image_is_trained_flattened_and_said(workdir):
    from PIL import Image

    image = Image.new("RGBA", (64, 64), (255, 0, 0, 0))  # red, hidden under alpha 0: SimpleTuner would train on it
    image.paste((0, 0, 255, 255), (16, 16, 48, 48))
    image.save(workdir / "data/glance.png")
    before = (workdir / "data/glance.png").read_bytes()
    result = run_cli("configs", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "has transparent pixels: trained on it flattened onto white" in result.stderr
    with Image.open(workdir / "output/dataset/glance.png") as staged:
        assert staged.mode == "RGB" and staged.getpixel((0, 0)) == (255, 255, 255)
        assert staged.getpixel((32, 32)) == (0, 0, 255)
    assert (workdir / "data/glance.png").read_bytes() == before  # the user's file is untouched
    black = run_cli("configs", "--device", "cpu", "--background", "#000000", "--force")
    assert black.exit_code == 0 and "flattened onto #000000" in black.stderr
    with Image.open(workdir / "output/dataset/glance.png") as staged:
        assert staged.getpixel((0, 0)) == (0, 0, 0)
    refused = run_cli("configs", "--device", "cpu", "--background", "nocolour")
    assert refused.exit_code == 1 and "--background 'nocolour' is not a colour" in refused.stderr


def test_a_caption_longer_than_a_text_encoder_takes_is_said(workdir):
    from glance.smallmodel import shipped_model

    args = ("configs", "--device", "cpu", "--model", str(shipped_model()), "--resolution", "64")
    short = run_cli(*args)
    assert short.exit_code == 0 and "caption" not in short.stderr
    (workdir / "data/glance.txt").write_text("a red circle on the left, " * 40)
    long = run_cli(*args)
    assert long.exit_code == 0, long.output
    assert "note: the caption is cut: tokenizer keeps 77 of its" in long.stderr
    assert "the rest is not trained on" in long.stderr


@pytest.mark.parametrize("args", [["-h"], ["infer", "-h"], ["export", "comfyui", "-h"], ["schedule", "-h"]])
def test_short_help_flag(args):
    result = run_cli(*args)
    assert result.exit_code == 0 and "Usage" in result.output


def test_infer_help_says_the_model_comes_from_the_run():
    text = " ".join(run_cli("infer", "--help").output.split())
    assert "[default: the run's, from OUTPUT_DIR/glance.json]" in text
    assert "[default: black-forest-labs/FLUX.1-dev]" not in text  # what train and configs default to


def test_schedule_command_prints_both_phases():
    result = run_cli("schedule", "--family", "qwen_image")
    assert result.exit_code == 0
    assert "979.1915" in result.output and "886.7053" in result.output
    assert "takes over from step 6 of 10 (ComfyUI SplitSigmas step 5)" in result.output


def test_simpletuners_parser_refusal_is_one_clear_error(workdir):
    from glance.families import GlanceError

    plan = plan_run(TrainSettings(device="cpu"))
    bad = plan.configs["slow"].model_copy(update={"optimizer": "no-such-optimizer"})
    with pytest.raises(GlanceError, match="SimpleTuner refuses the config: .*no-such-optimizer"):
        parser_check(bad)
