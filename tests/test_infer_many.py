"""glance infer with several prompts and seeds: one load, every image checked, the --compare sheet,
prompts files, the progress display, and --num-processes with accelerate (two CPU processes).
"""

import json
import os
import re
import subprocess
import sys

import pytest
from support.fake_terminal import FakeTerminal
from support.tiny_models import SIZE, write_finished_run
from typer.testing import CliRunner

from glance.batch import parse_compare, parse_seeds, plan_images, read_prompts_file
from glance.cli import app
from glance.families import GlanceError
from glance.infer import run_infer
from glance.infer_options import InferOptions
from glance.progress import ImageProgress, Reporter, library_output
from glance.records import read_png_parameters
from glance.sheet import read_sheet_layout, tile_size

PROMPTS = ["a red circle and a blue square on a warm gradient", "a lighthouse at sunset"]


def pixels(path):
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def run_dir(tiny, tmp_path_factory):
    """A run folder whose manifest points at the tiny Flux and its two LoRAs."""
    return write_finished_run(tiny("flux"), tmp_path_factory.mktemp("many") / "output")


def options(tiny, tmp_path, **overrides) -> InferOptions:
    model = tiny("flux")
    values = {
        "prompts": PROMPTS,
        "seeds": [0, 1],
        "model": str(model.model),
        "lists": model.lists,
        "slow_lora": model.slow,
        "fast_lora": model.fast,
        "out": tmp_path / "glance.png",
        "width": SIZE,
        "height": SIZE,
        "device": "cpu",
    }
    return InferOptions(**{**values, **overrides})


def test_two_prompts_two_seeds_from_one_load_with_a_compare_sheet(tiny, tmp_path, monkeypatch):
    import glance.render

    loads = []
    load = glance.render.load_pipeline
    monkeypatch.setattr(glance.render, "load_pipeline", lambda *args: loads.append(args) or load(*args))
    lists = tiny("flux").lists
    run = run_infer(options(tiny, tmp_path, compare=3), Reporter(quiet=True))

    assert len(loads) == 1  # the pipeline (and the LoRAs on it) loaded once for eight renders
    names = [result.image.name for result in run.images]
    assert names == ["glance-001.png", "glance-002.png", "glance-003.png", "glance-004.png"]
    expected = [(PROMPTS[0], 0), (PROMPTS[0], 1), (PROMPTS[1], 0), (PROMPTS[1], 1)]  # prompt-major
    assert [(result.prompt, result.seed) for result in run.images] == expected
    for result, (prompt, seed) in zip(run.images, expected, strict=True):
        record = read_png_parameters(result.image)
        assert (record["prompt"], record["seed"], record["kind"]) == (prompt, seed, "glance")
        assert record == result.summary
        # the trained sigmas and the switch, as they ran for this image
        assert record["sigmas"] == lists.sigmas
        assert [step["adapters"] for step in record["steps"]] == [["slow"]] * 5 + [["fast"]] * 5
        base = read_png_parameters(result.base.image)
        assert result.base.image.name == result.image.name.replace(".png", "-base3.png")
        assert (base["prompt"], base["seed"], base["kind"], len(base["steps"])) == (prompt, seed, "base", 3)
        assert all(step["adapters"] == [] for step in base["steps"])
        assert 0 < result.denoise_seconds <= result.seconds
    images = [pixels(result.image).tobytes() for result in run.images]
    assert len(set(images)) == 4  # four distinct images

    # Image 3 equals a run of its prompt and seed alone: every image starts on the slow adapter again.
    alone = run_infer(options(tiny, tmp_path, prompts=[PROMPTS[1]], seeds=[0], out=tmp_path / "alone.png"))
    assert alone.image == tmp_path / "alone.png"  # one image keeps --out's name
    assert pixels(alone.image).tobytes() == images[2]

    # The sheet: a row per image, base on the left and glance on the right, each tile the image scaled up.
    assert run.sheet == tmp_path / "glance-compare.png"
    layout = read_sheet_layout(run.sheet)
    tile_w, tile_h = tile_size(SIZE, SIZE)
    assert (tile_w, tile_h) == (256, 256)  # 32 px images, scaled 8x with sharp pixels
    assert (layout["rows"], layout["columns"], len(layout["tiles"])) == (4, 2, 8)
    sheet = pixels(run.sheet)
    assert sheet.shape[1] == 2 * tile_w + 12 + 2 * 16 and sheet.shape[0] > 4 * tile_h
    for tile in layout["tiles"]:
        left, top, right, bottom = tile["box"]
        assert (right - left, bottom - top) == (tile_w, tile_h)
        result = run.images[tile["row"]]
        assert tile["image"] == str(result.base.image if tile["column"] == 0 else result.image)
        source = pixels(tile["image"]).repeat(8, axis=0).repeat(8, axis=1)
        assert (sheet[top:bottom, left:right] == source).all()
    lefts = {tile["column"]: tile["box"][0] for tile in layout["tiles"]}
    assert lefts[0] < lefts[1]


def test_seeds_spec():
    assert parse_seeds("3") == [3]
    assert parse_seeds("0,5,9") == [0, 5, 9]
    assert parse_seeds("0-7") == list(range(8))
    assert parse_seeds("0-2, 9") == [0, 1, 2, 9]
    for bad, message in (
        ("x", "'x' is not a seed"),
        ("5-2", "the range 5-2 runs backwards"),
        ("-1", "seed -1 is out of range"),
        ("1,0-2", "seed 1 is given twice"),
    ):
        with pytest.raises(GlanceError, match=message):
            parse_seeds(bad)
    many = plan_images("out/a.png", ["p"], list(range(1000)))
    assert many[0].out.name == "a-0001.png" and many[-1].out.name == "a-1000.png"


def test_several_compare_step_counts_make_a_column_each_in_the_order_given(run_dir, tmp_path):
    assert parse_compare("50") == [50] and parse_compare("50,10,4") == [50, 10, 4]
    for bad, message in (("x", "give step counts"), ("0", "start at 1"), ("10,10", "given twice")):
        with pytest.raises(GlanceError, match=message):
            parse_compare(bad)

    result = CliRunner().invoke(
        app,
        ["infer", PROMPTS[0], "-o", str(run_dir), "--out", str(tmp_path / "g.png"), "--device", "cpu",
         "--compare", "3,2", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    run = json.loads(result.stdout)
    image = run["images"][0]
    assert [base["path"] for base in image["bases"]] == [str(tmp_path / "g-base3.png"), str(tmp_path / "g-base2.png")]
    assert [len(base["record"]["steps"]) for base in image["bases"]] == [3, 2]
    assert all(base["record"]["kind"] == "base" for base in image["bases"])
    assert "base" not in image  # each base record once, in "bases"
    layout = read_sheet_layout(tmp_path / "g-compare.png")
    assert (layout["rows"], layout["columns"]) == (1, 3)
    by_column = {tile["column"]: tile["image"] for tile in layout["tiles"]}
    assert by_column == {0: str(tmp_path / "g-base3.png"), 1: str(tmp_path / "g-base2.png"), 2: str(tmp_path / "g.png")}
    for tile in layout["tiles"]:
        left, top, right, bottom = tile["box"]
        source = pixels(tile["image"]).repeat(8, axis=0).repeat(8, axis=1)
        assert (pixels(tmp_path / "g-compare.png")[top:bottom, left:right] == source).all()


def test_prompts_file(tmp_path):
    good = tmp_path / "prompts.txt"
    good.write_text("# lighthouses\na lighthouse at dawn\n\n   \n  a red circle  \r\n# the end\n", encoding="utf-8")
    assert read_prompts_file(good) == ["a lighthouse at dawn", "a red circle"]
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"# ok\na lighthouse\n\xff\xfe broken\n")
    with pytest.raises(GlanceError, match=r"bad.txt:3: not UTF-8 \(byte 0xff\)"):
        read_prompts_file(bad)
    bad.write_text("a lighthouse\n\na bell\x07 rings\n", encoding="utf-8")
    with pytest.raises(GlanceError, match=r"bad.txt:3: the prompt holds a control character \(U\+0007\)"):
        read_prompts_file(bad)
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(GlanceError, match="no prompts in it"):
        read_prompts_file(tmp_path / "empty.txt")


def test_cli_prompts_file_with_a_bad_line_fails_before_loading(run_dir, tmp_path, monkeypatch):
    import glance.render

    def no_loading(*args):
        raise AssertionError("the model was loaded before the prompts were checked")

    monkeypatch.setattr(glance.render, "load_pipeline", no_loading)
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes("# two prompts\na lighthouse\nune \u00e9glise\n\xe9t\xe9\n".encode("latin-1", "replace"))
    args = ["infer", "--prompts", str(prompts), "-o", str(run_dir), "--out", str(tmp_path / "g.png"), "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert result.stderr.strip() == f"glance: error: {prompts}:3: not UTF-8 (byte 0xe9)"
    assert list(tmp_path.iterdir()) == [prompts]

    result = CliRunner().invoke(app, ["infer", "-o", str(run_dir), "--device", "cpu"])
    assert result.exit_code == 1 and "give a prompt" in result.stderr
    result = CliRunner().invoke(app, ["infer", "p", "--seeds", "3-1", "-o", str(run_dir)])
    assert result.exit_code == 1 and result.stderr.strip() == "glance: error: --seeds 3-1: the range 3-1 runs backwards"


def test_reporter_one_live_line_per_image_on_a_terminal_none_in_a_log():
    for tty in (True, False):
        stream, out = FakeTerminal(tty), FakeTerminal(False)
        reporter = Reporter(stream=stream, out=out)
        for name in ("glance-001.png", "glance-002.png"):
            progress = ImageProgress(name, 10, "seed 0: a lighthouse")
            for _ in range(10):
                progress.advance()
                reporter.progress(progress)
            reporter.result(f"wrote {name}")
        assert out.text == "wrote glance-001.png\nwrote glance-002.png\n"
        if tty:  # rich's bar, redrawn in place, erased before each result line
            plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", stream.text)
            assert "glance-001.png" in plain and "glance-002.png" in plain and "seed 0: a lighthouse" in plain
            assert stream.text.count("\x1b[?25h") == 2 and stream.text.endswith("\x1b[2K")  # two displays, both erased
        else:
            assert stream.text == ""
    quiet, out = FakeTerminal(True), FakeTerminal(False)
    reporter = Reporter(stream=quiet, out=out, quiet=True)
    reporter.message("loading")
    reporter.progress(ImageProgress("glance.png", 10))
    reporter.result("wrote glance.png")
    assert quiet.text == "" and out.text == "wrote glance.png\n"


def test_library_output_keeps_the_libraries_bars_off_and_restores_them():
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    before = (diffusers_logging.is_progress_bar_enabled(), diffusers_logging.get_verbosity())
    with library_output(verbose=False):
        assert not diffusers_logging.is_progress_bar_enabled()
        assert not transformers_logging.is_progress_bar_enabled()
        assert diffusers_logging.get_verbosity() == diffusers_logging.ERROR
    assert (diffusers_logging.is_progress_bar_enabled(), diffusers_logging.get_verbosity()) == before
    with library_output(verbose=True):
        assert diffusers_logging.is_progress_bar_enabled() == before[0]


# Real processes: what a captured run prints, and two accelerate processes on the CPU.


def glance_infer(*args, cwd):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-m", "glance", "infer", *PROMPTS, "--seeds", "0,1", "--device", "cpu", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


RAW_BARS = ("%|", "it/s]", "s/it]", "Loading pipeline components", "Loading weights", "Loading checkpoint")


def test_captured_and_quiet_runs_print_no_raw_bars_and_two_processes_render_the_same_images(run_dir, tmp_path):
    one = glance_infer("-o", str(run_dir), "--out", "one/g.png", "--json", cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    assert not any(bar in one.stderr for bar in RAW_BARS), one.stderr
    run = json.loads(one.stdout)  # stdout is the JSON alone; the result lines went to stderr
    assert [image["path"] for image in run["images"]] == [f"one/g-00{n}.png" for n in range(1, 5)]
    assert [(image["prompt"], image["seed"]) for image in run["images"]] == [(p, s) for p in PROMPTS for s in (0, 1)]
    assert one.stderr.count("wrote one/g-00") == 4

    two = glance_infer("-o", str(run_dir), "--out", "two/g.png", "--num-processes", "2", "--quiet", cwd=tmp_path)
    assert two.returncode == 0, two.stderr
    assert two.stderr == ""  # --quiet: nothing but the result lines, not even accelerate's launch notices
    lines = two.stdout.splitlines()
    assert [line.split(" (")[0] for line in lines] == [f"wrote two/g-00{n}.png" for n in range(1, 5)]
    for number in range(1, 5):  # each image rendered once, under the same name, with the same record
        a, b = tmp_path / f"one/g-00{number}.png", tmp_path / f"two/g-00{number}.png"
        assert abs(pixels(a) - pixels(b)).max() <= 2  # CPU thread counts may change the last bits
        assert read_png_parameters(a) == read_png_parameters(b)


def test_a_failed_process_is_named_by_its_cause(tiny, tmp_path, monkeypatch, capsys):
    """Like a failed training phase: the last exception in the processes' output, not their raw last lines."""
    import glance.spread
    from glance.spread import render_spread

    crash = "\n".join(
        (
            "print('Traceback (most recent call last):')",
            "print('RuntimeError: the worker broke')",
            "print('subprocess.CalledProcessError: Command [...] returned non-zero exit status 1.')",  # accelerate's
            "raise SystemExit(1)",
        )
    )
    popen = subprocess.Popen
    monkeypatch.setattr(
        glance.spread.subprocess, "Popen", lambda command, **kw: popen([sys.executable, "-c", crash], **kw)
    )
    jobs = plan_images(tmp_path / "g.png", PROMPTS, [0])
    two = options(tiny, tmp_path, num_processes=2)
    capsys.readouterr()  # building the tiny model (first use) prints its own bars
    with pytest.raises(GlanceError, match=r"^--num-processes 2: a process failed \(exit code 1\)$"):
        render_spread(two, jobs, "cpu", Reporter(quiet=True))
    assert capsys.readouterr().err.splitlines() == ["a process: RuntimeError: the worker broke"]
    assert not list(tmp_path.iterdir())
