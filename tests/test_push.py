"""`glance push` and `glance infer --lora-repo`, against a stand-in Hub on 127.0.0.1 (the real client code runs)."""

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from support.fake_hub import FakeHub
from support.tiny_models import write_finished_run

from glance.demo import DEMO_PROMPTS
from glance.manifest import load_manifest

DEMO_PROMPT = DEMO_PROMPTS[0].text

READ_TOKEN, WRITE_TOKEN = "hf_read_only", "hf_can_write"
REPO = "tester/tiny-glance"
BASE = "tester/tiny-flux"  # the tiny base model, served by the stand-in Hub under a hub id


def run_glance(
    *args: str, cwd: Path, hub: FakeHub | None, home: Path, token: str | None = WRITE_TOKEN, offline: bool = False
):
    env = dict(os.environ, HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1")
    for name in ("HF_HUB_OFFLINE", "HF_TOKEN", "GLANCE_SIMPLETUNER"):
        env.pop(name, None)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    env["HF_ENDPOINT"] = hub.url if hub is not None else "http://127.0.0.1:9"  # port 9: nothing listens
    if token is not None:
        env["HF_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "glance", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="module")
def pushed(trained_run, tmp_path_factory):
    """A copy of the session's trained run, pushed once (with a rendered sample) to a stand-in Hub."""
    root = tmp_path_factory.mktemp("push")
    output = root / "output"
    # Not the demo's own renders (samples/): they are this pair's too, and push would take them with the --sample one.
    shutil.copytree(trained_run.output, output, ignore=shutil.ignore_patterns("cache", "*.log", "push", "samples"))
    hub = FakeHub(root / "hub").__enter__()
    hub.add_token(READ_TOKEN)
    hub.add_token(WRITE_TOKEN, write=True)
    hub.add_repo(BASE, trained_run.model)
    result = run_glance(
        "push", REPO, "-o", str(output), "--base-model", BASE, "--sample", DEMO_PROMPT,
        cwd=root, hub=hub, home=root / "hf-home",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    yield hub, root, output, result
    hub.__exit__(None, None, None)


def test_push_uploads_the_pair_in_one_commit(pushed):
    hub, root, output, result = pushed
    files = hub.files(REPO)
    assert set(files) == {
        ".gitattributes",
        "README.md",
        "glance.json",
        "glance-slow/pytorch_lora_weights.safetensors",
        "glance-fast/pytorch_lora_weights.safetensors",
        "images/sample-1.png",
        "comfyui/glance-slow.safetensors",
        "comfyui/glance-fast.safetensors",
        "comfyui/glance-workflow.json",
        "comfyui/README.md",
    }
    assert hub.repos[REPO].commits == 2  # the repo's creation, then everything in one commit
    assert (
        files["glance-slow/pytorch_lora_weights.safetensors"]
        == (output / "glance-slow/pytorch_lora_weights.safetensors").read_bytes()
    )
    assert hub.repos[REPO].sha in result.stdout  # the commit URL is printed


def test_nothing_local_leaves_the_machine(pushed, trained_run):
    hub, root, output, _ = pushed
    local = [str(root), str(trained_run.root), str(Path.home())]
    for path, data in hub.files(REPO).items():
        text = data.decode("latin-1")  # PNG text chunks and safetensors headers included
        for prefix in local:
            assert prefix not in text, f"{path} holds the local path {prefix}"
    manifest = json.loads(hub.files(REPO)["glance.json"])
    assert manifest["model"] == BASE
    assert {record["lora_dir"] for record in manifest["phases"].values()} == {"glance-slow", "glance-fast"}
    assert "written_configs" not in manifest


def test_card_front_matter_is_hub_metadata(pushed):
    hub, *_ = pushed
    card = hub.files(REPO)["README.md"].decode()
    match = re.match(r"^---\n(.*?)\n---\n", card, re.DOTALL)
    assert match, card[:200]
    meta = yaml.safe_load(match.group(1))
    assert meta["base_model"] == BASE
    assert meta["library_name"] == "diffusers" and meta["pipeline_tag"] == "text-to-image"
    assert {"lora", "glance", "flux"} <= set(meta["tags"])
    assert meta["widget"] == [{"text": DEMO_PROMPT, "output": {"url": "images/sample-1.png"}}]
    assert "instance_prompt" not in meta  # the caption stays private without --include-training-image
    assert f"glance infer --lora-repo {REPO}" in card
    # the client had the Hub check the card's metadata before the commit
    assert any(r["method"] == "POST" and r["path"] == "/api/validate-yaml" for r in hub.requests)


def test_card_snippet_samples_like_glance_infer(pushed, trained_run, tmp_path):
    """The card's plain diffusers code, pointed at local copies of the repo and base model, gives glance's pixels."""
    hub, root, output, _ = pushed
    repo_copy = tmp_path / "repo"
    for path, data in hub.files(REPO).items():
        (repo_copy / path).parent.mkdir(parents=True, exist_ok=True)
        (repo_copy / path).write_bytes(data)
    card = (repo_copy / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", card, re.DOTALL).group(1)
    assert not re.search(r"^\s*(import|from) glance\b", snippet, re.MULTILINE)  # plain diffusers
    snippet = re.sub(r"^repo_id = .*$", f"repo_id = {str(repo_copy)!r}", snippet, flags=re.MULTILINE)
    snippet = re.sub(r"^base_model = .*$", f"base_model = {str(trained_run.model)!r}", snippet, flags=re.MULTILINE)
    env = dict(os.environ, HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(
        [sys.executable, "-c", snippet], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    sample = output / "samples" / "sample.png"  # rendered by `glance push --sample` through glance infer
    assert np.array_equal(pixels(tmp_path / "glance.png"), pixels(sample))


def test_comfyui_files_and_card_section(pushed):
    """The workflow samples the card's first sample (prompt, seed); the sample PNG opens as that same workflow."""
    hub, root, output, _ = pushed
    files = hub.files(REPO)
    workflow = json.loads(files["comfyui/glance-workflow.json"])
    [text] = [n["inputs"]["text"] for n in workflow.values() if n["class_type"] == "CLIPTextEncode"]
    assert text == DEMO_PROMPT
    with Image.open(io.BytesIO(files["images/sample-1.png"])) as sample:
        assert json.loads(sample.text["prompt"]) == workflow
    assert b'"glance.base_model":"tester/tiny-flux"' in files["comfyui/glance-slow.safetensors"][:20000]
    assert "[tester/tiny-flux](https://huggingface.co/tester/tiny-flux)" in files["comfyui/README.md"].decode()
    card = files["README.md"].decode()
    assert "## Use in ComfyUI" in card and "comfyui/glance-workflow.json" in card and "step (5)" in card


def test_infer_from_a_pushed_pair(pushed, tmp_path):
    hub, root, output, _ = pushed
    out = tmp_path / "from-hub.png"
    result = run_glance(
        "infer", "--lora-repo", REPO, DEMO_PROMPT, "--out", str(out), "--device", "cpu",
        cwd=tmp_path, hub=hub, home=root / "hf-home-infer", token=READ_TOKEN,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert np.array_equal(pixels(out), pixels(output / "samples" / "sample.png"))
    # Once fetched, the pair samples offline from the cache.
    again = run_glance(
        "infer", "--lora-repo", REPO, DEMO_PROMPT, "--out", str(tmp_path / "offline.png"), "--device", "cpu",
        cwd=tmp_path, hub=None, home=root / "hf-home-infer", offline=True,
    )  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    assert np.array_equal(pixels(tmp_path / "offline.png"), pixels(out))


def test_dry_run_builds_the_folder_and_uploads_nothing(pushed, tmp_path):
    hub, root, output, _ = pushed
    before = len(hub.requests)
    result = run_glance("push", "tester/other", "-o", str(output), "--base-model", BASE, "--dry-run",
                        "--include-training-image", cwd=root, hub=hub, home=tmp_path / "home")  # fmt: skip
    assert result.returncode == 0, result.stderr
    built = output / "push"
    assert "training/glance.png" in result.stdout and "instance_prompt:" in result.stdout
    assert (built / "README.md").read_text() in result.stdout
    assert (built / "training/glance.txt").read_bytes() == (output / "dataset/glance.txt").read_bytes()
    assert "tester/other" not in hub.repos
    assert [r for r in hub.requests[before:] if r["method"] == "POST"] == []


def _one_line_error(result) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("glance: error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize(
    "case, expect",
    [
        ("no token", "hf auth login"),
        ("read-only token", "needs write access"),
        ("malformed repo id", "not a valid repo id"),
        ("local base model", "--base-model"),
        ("incomplete run", "fast phase has not finished"),
        ("network unreachable", "cannot reach the Hub"),
        ("offline", "unset HF_HUB_OFFLINE"),
    ],
)
def test_push_refusals_are_one_line_and_upload_nothing(pushed, tmp_path, case, expect):
    hub, root, output, _ = pushed
    run = tmp_path / "output"
    shutil.copytree(output, run, ignore=shutil.ignore_patterns("push", "samples"))
    repo, extra, token, server = "tester/refused", ["--base-model", BASE], WRITE_TOKEN, hub
    if case == "no token":
        token = None
    elif case == "read-only token":
        token = READ_TOKEN
    elif case == "malformed repo id":
        repo = "not a//repo"
    elif case == "local base model":
        extra = []
    elif case == "incomplete run":
        manifest = load_manifest(run / "glance.json")
        del manifest.phases["fast"]
        manifest.save(run / "glance.json")
    elif case == "network unreachable":
        server = None
    commits = {name: (r.sha, r.commits) for name, r in hub.repos.items()}
    result = run_glance("push", repo, "-o", str(run), *extra, cwd=tmp_path, hub=server, home=tmp_path / "home",
                        token=token, offline=case == "offline")  # fmt: skip
    if case == "offline":
        assert "uploading" not in result.stdout  # said before anything else
    assert expect in _one_line_error(result)
    assert {name: (r.sha, r.commits) for name, r in hub.repos.items()} == commits


def test_infer_refuses_a_repo_that_is_not_a_glance_pair(pushed, tmp_path):
    hub, root, *_ = pushed
    result = run_glance("infer", "--lora-repo", BASE, "a prompt", cwd=tmp_path, hub=hub, home=tmp_path / "home")
    assert "is not a Glance pair" in _one_line_error(result)
    missing = run_glance("infer", "--lora-repo", "tester/nothing-here", "x", cwd=tmp_path, hub=hub, home=tmp_path)
    assert "not found on the Hub" in _one_line_error(missing)


def test_lora_repo_offline_or_out_of_reach_says_so_not_blames_the_repo(pushed, tmp_path):
    hub, root, *_ = pushed
    offline = run_glance("infer", "--lora-repo", REPO, "x", cwd=tmp_path, hub=hub, home=tmp_path / "a", offline=True)
    line = _one_line_error(offline)
    assert "HF_HUB_OFFLINE" in line and "not a Glance pair" not in line
    unreachable = run_glance("infer", "--lora-repo", REPO, "x", cwd=tmp_path, hub=None, home=tmp_path / "b")
    line = _one_line_error(unreachable)  # one line: no retry warnings before it
    assert "cannot reach the Hub" in line and "not a Glance pair" not in line


def test_a_moved_run_keeps_its_samples_and_says_why_others_are_left(tiny, tmp_path):
    """Samples are the pair's by the LoRA files' hashes, not by the folder the run was in when they were rendered."""
    from glance.infer import options_from_manifest, run_infer
    from glance.share import PushOptions, build_folder

    run = write_finished_run(tiny("flux"), tmp_path / "run")
    manifest = load_manifest(run / "glance.json")
    for phase, record in manifest.phases.items():  # the LoRAs inside the run, as glance train leaves them
        shutil.copytree(record.lora_dir, run / f"glance-{phase}")
        record.lora_dir = f"glance-{phase}"
    manifest.save(run / "glance.json")
    run_infer(options_from_manifest(run, prompts=["a red circle"], device="cpu"))
    run_infer(options_from_manifest(run, prompts=["another pair"], out=run / "samples" / "other.png",
                                    slow_lora=tiny("flux").fast, device="cpu"))  # fmt: skip
    moved = tmp_path / "moved"
    shutil.move(run, moved)
    built = build_folder(PushOptions(REPO, output_dir=moved, base_model=BASE), tmp_path / "repo")
    assert [(sample.path, sample.prompt) for sample in built.samples] == [("images/sample-1.png", "a red circle")]
    assert built.skipped == [f"{moved / 'samples' / 'other.png'}: rendered with other LoRAs than this run's"]


def test_a_second_push_replaces_the_first_pushs_samples(tiny, tmp_path):
    """Two pushes of a tiny run with different samples: the repo ends with only the second push's."""
    from glance.infer import options_from_manifest, run_infer

    run = write_finished_run(tiny("flux"), tmp_path / "run")
    stray = run_infer(options_from_manifest(run, prompts=["a stray render"], out=tmp_path / "s.png", device="cpu"))
    with FakeHub(tmp_path / "hub") as hub:
        hub.add_token(WRITE_TOKEN, write=True)
        pushed = []
        for prompts, seeds in ((["a red circle", "a blue square"], [0]), (["a green triangle"], [5])):
            shutil.rmtree(run / "samples", ignore_errors=True)  # glance infer renders into the run's samples/
            run_infer(options_from_manifest(run, prompts=prompts, seeds=seeds, device="cpu"))
            # Run from the folder of a stray render of the same pair: push takes only the run's own samples.
            result = run_glance("push", REPO, "-o", str(run), "--base-model", BASE, cwd=stray.image.parent, hub=hub,
                                home=tmp_path / "home")  # fmt: skip
            assert result.returncode == 0, result.stdout + result.stderr
            assert f"(seed {seeds[0]}: {prompts[0]})" in result.stdout  # each sample listed with its prompt
            pushed.append({path: data for path, data in hub.files(REPO).items() if path.startswith("images/")})
        assert hub.repos[REPO].commits == 3  # the repo's creation, then one commit a push

    def prompt(png: bytes) -> str:
        with Image.open(io.BytesIO(png)) as image:
            return json.loads(image.text["glance"])["prompt"]

    assert {path: prompt(png) for path, png in pushed[0].items()} == {
        "images/sample-1.png": "a red circle",
        "images/sample-2.png": "a blue square",
    }
    assert {path: prompt(png) for path, png in pushed[1].items()} == {"images/sample-1.png": "a green triangle"}
