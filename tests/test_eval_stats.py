"""`glance eval` without rendering: intervals, comparisons, the verdict, the columns, the cache keys, bad input."""

import json
import random
import re
from pathlib import Path

import pytest

from glance.eval_plan import EvalTask, cache_key, plan_columns, with_cache
from glance.eval_stats import compare, mean_interval, verdict_line
from glance.families import GlanceError
from glance.manifest import RunManifest


def _scores(n: int, seed: int, **means: float) -> list[dict]:
    rng = random.Random(seed)
    return [{key: mean + rng.gauss(0, 0.05) for key, mean in means.items()} for _ in range(n)]


def test_interval_is_seeded_and_holds_the_mean():
    values = [v["ssim"] for v in _scores(60, 1, ssim=0.8)]
    first, again = mean_interval(values), mean_interval(values)
    assert first == again  # the same scores, the same interval: reproducible
    assert first.low < first.mean < first.high and first.n == 60
    assert first.high - first.low < 0.05
    wider = mean_interval(values[:10])
    assert wider.high - wider.low > first.high - first.low  # fewer images, a wider interval
    assert mean_interval([None, None]) is None
    assert mean_interval([1.0, 1.0, None]).model_dump() == {"mean": 1.0, "low": 1.0, "high": 1.0, "n": 2}


def _verdict(glance: list[dict], base: list[dict]) -> str:
    return verdict_line("glance-10", 10, 50, compare("glance-10", "base-10", glance, base), None)


def test_verdict_says_beats_worse_or_no_measurable_difference():
    base = _scores(80, 2, ssim=0.80, clip_score=25.0, clip_pull=0.5)
    closer = _verdict(_scores(80, 3, ssim=0.9, clip_score=25.5, clip_pull=0.5), base)
    assert re.match(r"glance-10 beats the base at 10 steps: closer to 50 steps on \d+ % \(\d+-\d+ %\) of 80 images",
                    closer)  # fmt: skip
    assert re.search(r"CLIP score \+0\.\d\d \(\+0\.\d\d to \+0\.\d\d\)", closer)
    farther = _verdict(_scores(80, 4, ssim=0.7, clip_score=25.0, clip_pull=0.5), base)
    assert farther.startswith("glance-10 is worse than the base at 10 steps")
    same = _verdict(_scores(80, 5, ssim=0.8, clip_score=25.0, clip_pull=0.5), base)
    assert same.startswith("glance-10: no measurable difference from the base at 10 steps")
    for line in (closer, farther, same):
        assert "\n" not in line and "training image: the pull" not in line


def test_verdict_calls_out_adherence_bought_with_the_pull():
    """The issue's case: a pair that wins on adherence by drawing its training image, away from 50 steps."""
    base = _scores(80, 6, ssim=0.8, judge_pass=0.5, judge_pull=0.2)
    pulled = [
        {"ssim": s["ssim"] - 0.2, "judge_pass": 1.0 if i % 10 else 0.0, "judge_pull": 0.9}
        for i, s in enumerate(_scores(80, 7, ssim=0.8))
    ]
    for row in base:
        row["judge_pass"] = round(row["judge_pass"])  # 0 or 1, as the judge gives
    line = _verdict(pulled, base)
    assert line.startswith("glance-10 is worse than the base at 10 steps")
    assert "judge pass +" in line and "pull toward its training image +" in line
    assert "gains judge pass by moving away from 50 steps and toward its training image" in line


def test_comparison_pairs_the_pull_of_each_pair():
    """With several pairs, a base image's pull toward the second pair's image is its own key."""
    glance = [{"ssim": 0.8, "dino_pull": 0.9} for _ in range(5)]
    base = [{"ssim": 0.8, "dino_pull": 0.1, "dino_pull[glance-10 b]": 0.85} for _ in range(5)]
    own = compare("glance-10 b", "base-10", glance, base, pull_suffix="[glance-10 b]")
    first = compare("glance-10 a", "base-10", glance, base)
    assert own.pull_diff.mean == pytest.approx(0.05) and first.pull_diff.mean == pytest.approx(0.8)
    assert own.closer.mean == 0.5  # ties count half


def test_share_interval_stays_honest_with_few_images():
    from glance.eval_stats import share_interval

    four = share_interval([0.0] * 4)
    assert (four.mean, four.low, four.n) == (0.0, 0.0, 4) and 0.4 < four.high < 0.6  # not "0-0 %"
    line = verdict_line("glance-10", 10, 50, compare("glance-10", "base-10", [{"ssim": 0.5}] * 3, [{"ssim": 0.9}] * 3),
                        None)  # fmt: skip
    assert line.startswith("glance-10: no measurable difference")  # 0 of 3 closer is not yet "worse"
    many = share_interval([1.0] * 70 + [0.0] * 26)
    assert 0.6 < many.low < many.mean < many.high < 0.82


def _manifest(model: str = "/models/x", sigmas=(1000, 979.1915, 957.5157, 934.9171, 911.3354)) -> RunManifest:
    return RunManifest(glance_version="0", model=model, family="flux", resolution=64, slow_timesteps=list(sigmas),
                       fast_timesteps=[886.7053, 745.0728, 562.9505, 320.0802, 20.0], seed=0, steps=60, rank=16,
                       learning_rate=5e-4)  # fmt: skip


def test_columns_one_run_and_several():
    one = plan_columns([Path("/r/a")], [_manifest()], 50, 1.0)
    assert [(c.name, c.kind, c.steps) for c in one] == [
        ("base-50", "base", 50), ("base-10", "base", 10), ("schedule-10", "schedule", 10), ("glance-10", "glance", 10)
    ]  # fmt: skip
    other = _manifest(sigmas=(1000, 990, 980, 970, 960))
    two = plan_columns([Path("/r/a"), Path("/r/b")], [_manifest(), other], 30, 0.25)
    assert [c.name for c in two] == ["base-30", "base-10", "schedule-10 a", "schedule-10 b", "glance-10 a x0.25",
                                     "glance-10 b x0.25"]  # fmt: skip
    same_lists = plan_columns([Path("/r/a"), Path("/s/a")], [_manifest(), _manifest()], 50, 1.0)
    assert [c.name for c in same_lists][2:] == ["schedule-10", "glance-10 r/a", "glance-10 s/a"]


def test_cache_key_holds_everything_that_makes_the_image():
    task = EvalTask(column="base-50", kind="base", index=0, prompt="a cat", seed=0, steps=50, out=Path("x.png"))
    identity = {"model": "m", "files": "abc", "width": 64, "guidance": 1.0, "dtype": "float32", "device": "cpu"}
    key = cache_key(task, identity)
    assert key == cache_key(task.model_copy(update={"column": "renamed", "out": Path("y.png"), "index": 3}), identity)
    for change in ({"prompt": "a dog"}, {"seed": 1}, {"steps": 49}):
        assert cache_key(task.model_copy(update=change), identity) != key
    for change in ({"files": "abd"}, {"width": 128}, {"guidance": 3.5}, {"dtype": "bfloat16"}, {"device": "cuda"}):
        assert cache_key(task, {**identity, **change}) != key
    # A pair's image also carries its LoRA files and strength; base images do not.
    pair = task.model_copy(update={"kind": "glance", "run": Path("/r/a"), "sigmas": [1.0, 0.5]})
    pairs = {"/r/a": {"loras": ["s1", "f1"], "scale": 1.0}}
    first = with_cache([task, pair], Path("/c"), identity, pairs)
    weaker = with_cache([task, pair], Path("/c"), identity, {"/r/a": {"loras": ["s1", "f1"], "scale": 0.25}})
    assert first[0].cache == weaker[0].cache and first[1].cache != weaker[1].cache
    assert first[0].cache.parent.name == first[0].cache.name[:2]


# --- bad input: one line, before anything renders ----------------------------------------------


def _finished_run(folder: Path, model: str) -> Path:
    manifest = json.loads(_manifest(model).model_dump_json())
    record = {"lora_dir": "glance-slow", "inputs_sha256": "0", "duration_s": 1.0, "finished_at": "2026-12-01T00:00:00"}
    manifest["phases"] = {"slow": record, "fast": {**record, "lora_dir": "glance-fast"}}
    folder.mkdir(parents=True)
    (folder / "glance.json").write_text(json.dumps(manifest))
    return folder


def _eval(*args: str, cwd: Path, env: dict | None = None):
    import os
    import subprocess
    import sys

    environment = dict(os.environ, HF_HUB_OFFLINE="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "glance", "eval", *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_bad_input_is_one_line(tmp_path):
    from glance.smallmodel import shipped_model

    shapes = str(shipped_model())
    run = _finished_run(tmp_path / "run", shapes)
    (tmp_path / "half").mkdir()
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    other = _finished_run(tmp_path / "other", str(tmp_path / "another-model"))
    cases = {
        ("-o", str(tmp_path / "half")): "is not a finished glance run",
        ("-o", str(run), "--prompts", str(empty)): "no prompts in it",
        ("-o", str(run), "-o", str(other)): "trained on different base models",
        ("-o", str(run), "--scorer", "clip"): "not in the Hugging Face cache and HF_HUB_OFFLINE=1",
        ("-o", str(run), "--scorer-model", "./x"): "say which scorer it is for",
    }
    for args, message in cases.items():
        result = _eval(*args, cwd=tmp_path, env={"HF_HOME": str(tmp_path / "hf")})
        assert result.returncode == 1, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("glance: error:") and message in lines[0], (args, lines)
    assert not (run / "eval").exists()  # nothing written


def test_judge_refuses_prompts_it_cannot_read(tmp_path):
    from glance.eval import _check_judge_prompts

    with pytest.raises(GlanceError, match="reads the shapes model's captions only"):
        _check_judge_prompts(["a red circle, white background", "a lighthouse at dawn"])
