"""The Hub boundary against a local fake Hub: one-line refusals before SimpleTuner, one download, resume.

huggingface_hub reads HF_ENDPOINT / HF_HOME / HF_HUB_OFFLINE when imported, so glance runs in a
subprocess here, as a user runs it.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.fake_hub import FakeHub

from glance.manifest import load_manifest
from glance.tiny import write_sample_pair

TINY_SD3 = "glance-test/tiny-sd3"
GATED = "glance-test/gated-flux"
HUGE = "glance-test/huge-flux"
GATED_FAMILIES = {
    "chroma": "glance-test/gated-chroma",
    "z_image": "glance-test/gated-z-image",
    "flux2": "glance-test/gated-flux2-klein",  # an unknown hub id: its flavour is read from the download
}
GRANTED_TOKEN = "hf_granted_token"
OTHER_TOKEN = "hf_valid_token_without_access"


def glance(*args: str, cwd: Path, hub: FakeHub, hf_home: Path, **env_extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_ENDPOINT=hub.url, HF_HOME=str(hf_home), HF_HUB_DISABLE_TELEMETRY="1")
    env.update(env_extra)
    for name in ("HF_HUB_OFFLINE", "HF_TOKEN", "GLANCE_SIMPLETUNER"):
        if name not in env_extra:
            env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "glance", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


@pytest.fixture(scope="session")
def hub(tmp_path_factory, tiny):
    """A fake Hub with a tiny SD3 (plus files a pipeline never loads), a gated and a too-big tiny Flux."""
    root = tmp_path_factory.mktemp("fake-hub")
    sd3 = root / "source-sd3"
    import shutil

    shutil.copytree(tiny("sd3").model, sd3)
    (sd3 / "transformer" / "diffusion_pytorch_model.bin").write_bytes(b"pickle weights, never fetched")
    (sd3 / "sd3-single-file.safetensors").write_bytes(b"a top-level checkpoint, never fetched")
    (sd3 / "README.md").write_text("# tiny sd3\n")
    server = FakeHub(root / "repos")
    server.add_repo(TINY_SD3, sd3)
    server.add_repo(GATED, tiny("flux").model, gated=True, granted=(GRANTED_TOKEN,))
    server.add_repo(HUGE, tiny("flux").model, claim_size=1 << 60)
    for family, repo in GATED_FAMILIES.items():
        server.add_repo(repo, tiny(family).model, gated=True, granted=(GRANTED_TOKEN,))
    server.tokens.add(OTHER_TOKEN)
    with server:
        yield server


@pytest.fixture
def workdir(tmp_path):
    write_sample_pair(tmp_path / "data", size=64)
    return tmp_path


TRAIN = ("train", "data/glance.png", "--resolution", "64", "--steps", "2", "--device", "cpu")
SUPPORT = Path(__file__).parent / "support"


def stand_in_simpletuner(folder: Path) -> dict[str, str]:
    """The environment that makes `glance train` run tests/support/fake_simpletuner.py (seconds, not minutes)."""
    wrapper = folder / "simpletuner"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{SUPPORT / "fake_simpletuner.py"}" "$@"\n')
    wrapper.chmod(0o755)
    return {"GLANCE_SIMPLETUNER": str(wrapper), "FAKE_SIMPLETUNER_CALLS": str(folder / "calls.jsonl")}


FAILURES = {  # case -> (model, extra args, extra env, what the one line says)
    "gated": (GATED, (), {}, f"{GATED} is gated: accept its licence at {{url}}/{GATED}"),
    "gated, token without access": (GATED, (), {"HF_TOKEN": OTHER_TOKEN}, f"{GATED} is gated"),
    "not found": ("glance-test/no-such-model", (), {}, "glance-test/no-such-model not found on the Hub"),
    "revision not found": (TINY_SD3, ("--revision", "v9"), {}, f"revision 'v9' of {TINY_SD3} not found"),
    "refused token": (TINY_SD3, (), {"HF_TOKEN": "hf_expired"}, "the Hub refused the token (HTTP 401"),
    "offline": (TINY_SD3, (), {"HF_HUB_OFFLINE": "1"}, "is not in the Hugging Face cache"),
    "unreachable": (TINY_SD3, (), {"HF_ENDPOINT": "http://127.0.0.1:9"}, "cannot reach the Hub at http://127.0.0.1:9"),
    "not enough disk": (HUGE, (), {}, "not enough disk for glance-test/huge-flux"),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_hub_refusals_are_one_line_before_anything_runs(hub, workdir, case):
    model, args, env, message = FAILURES[case]
    hf_home = workdir / "hf-home"
    started = time.monotonic()
    result = glance(*TRAIN, "--model", model, *args, cwd=workdir, hub=hub, hf_home=hf_home, **env)
    elapsed = time.monotonic() - started
    print(f"{case}: exit {result.returncode} after {elapsed:.2f} s: {result.stderr.strip()}")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("glance: error: "), result.stderr
    assert message.format(url=hub.url) in lines[0]
    if case.startswith("gated"):
        assert "hf auth login" in lines[0] and "HF_TOKEN" in lines[0]
    assert not (workdir / "output").exists() and not (workdir / "config").exists()
    assert not list(hf_home.rglob("*.safetensors"))


@pytest.mark.parametrize("family", sorted(GATED_FAMILIES))
def test_gated_model_of_a_newer_family_refused_in_one_line_then_detected_once_downloaded(hub, workdir, family):
    repo, hf_home = GATED_FAMILIES[family], workdir / "hf-home"
    refused = glance(*TRAIN, "--model", repo, cwd=workdir, hub=hub, hf_home=hf_home)
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 1 and len(lines) == 1 and lines[0].startswith("glance: error: ")
    assert f"{repo} is gated" in lines[0] and not (workdir / "config").exists()
    env = stand_in_simpletuner(workdir)
    granted = glance(*TRAIN, "--model", repo, cwd=workdir, hub=hub, hf_home=hf_home, HF_TOKEN=GRANTED_TOKEN, **env)
    assert granted.returncode == 0, granted.stderr
    config = json.loads((workdir / "config" / "glance-slow.json").read_text())
    assert config["model_family"] == family  # from the downloaded model_index.json
    if family == "flux2":  # never without a flavour: SimpleTuner would fetch the 24B Mistral encoder for a klein
        assert config["model_flavour"] == "klein-4b"


def test_gated_model_with_access_downloads_and_trains(hub, workdir):
    env = stand_in_simpletuner(workdir)
    result = glance(
        *TRAIN, "--model", GATED, cwd=workdir, hub=hub, hf_home=workdir / "hf-home", HF_TOKEN=GRANTED_TOKEN, **env
    )
    assert result.returncode == 0, result.stderr
    config = json.loads((workdir / "config" / "glance-slow.json").read_text())
    snapshot = Path(config["pretrained_model_name_or_path"])
    assert snapshot.name == hub.repos[GATED].sha and (snapshot / "model_index.json").is_file()
    assert load_manifest(workdir / "output" / "glance.json").model_revision == hub.repos[GATED].sha


def test_dry_run_and_configs_look_up_but_never_download(hub, workdir):
    hf_home = workdir / "hf-home"
    dry = glance(*TRAIN, "--model", TINY_SD3, "--family", "sd3", "--dry-run", cwd=workdir, hub=hub, hf_home=hf_home)
    assert dry.returncode == 0, dry.stderr
    assert f"{TINY_SD3} is not downloaded yet: about" in dry.stdout
    offline = glance(*TRAIN, "--dry-run", cwd=workdir, hub=hub, hf_home=hf_home, HF_HUB_OFFLINE="1")
    assert offline.returncode == 0, offline.stderr  # the default FLUX.1-dev, planned from what glance knows
    assert "the download is still to come" in offline.stdout
    configs = glance(
        "configs", "data/glance.png", "--model", TINY_SD3, "--family", "sd3", cwd=workdir, hub=hub, hf_home=hf_home
    )
    assert configs.returncode == 0, configs.stderr
    assert json.loads((workdir / "config/glance-slow.json").read_text())["pretrained_model_name_or_path"] == TINY_SD3
    assert not list(hf_home.rglob("*.safetensors")) and not list(hf_home.rglob("model_index.json"))


def test_interrupted_download_resumes_with_the_files_not_finished(hub, tmp_path):
    hf_home = tmp_path / "hf-home"
    write_sample_pair(tmp_path / "data", size=64)
    args = (*TRAIN, "--model", TINY_SD3)
    stand_in = stand_in_simpletuner(tmp_path)
    env = dict(os.environ, HF_ENDPOINT=hub.url, HF_HOME=str(hf_home), **stand_in)
    env.pop("HF_HUB_OFFLINE", None)
    blobs = hf_home / "hub" / "models--glance-test--tiny-sd3" / "blobs"
    hub.chunk_delay = 0.5  # 64 KiB per half second: the safetensors files take seconds, the configs do not
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "glance", *args], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len([p for p in blobs.glob("*") if ".incomplete" not in p.name]) < 4:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        hub.chunk_delay = 0.0
    assert proc.returncode == 130, err
    assert "the next run resumes it" in err and "Traceback" not in err
    assert not (tmp_path / "config").exists() and not (tmp_path / "output").exists()
    assert not list(blobs.glob("*.incomplete"))
    kept = {p.name for p in blobs.iterdir()}
    hub.requests.clear()
    again = glance(*args, cwd=tmp_path, hub=hub, hf_home=hf_home, **stand_in)
    assert again.returncode == 0, again.stderr
    fetched = [r["path"] for r in hub.requests if r["method"] == "GET" and "/resolve/" in r["path"]]
    repo = hub.repos[TINY_SD3]
    refetched = [p for p in fetched if repo.files[p.split(f"/{repo.sha}/", 1)[1]].etag in kept]
    assert fetched and not refetched  # only the files the first run had not finished


def test_download_that_breaks_is_one_line_and_leaves_no_parts(hub, workdir):
    hf_home = workdir / "hf-home"
    blobs = hf_home / "hub" / "models--glance-test--tiny-sd3" / "blobs"
    hub.broken = {"transformer/diffusion_pytorch_model.safetensors"}
    try:
        result = glance(*TRAIN, "--model", TINY_SD3, cwd=workdir, hub=hub, hf_home=hf_home)
    finally:
        hub.broken = set()
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[-1].startswith(f"glance: error: downloading {TINY_SD3} failed"), result.stderr
    assert "run again to resume" in lines[-1] and len([x for x in lines if "glance:" in x]) == 1
    assert not (workdir / "output").exists() and not (workdir / "config").exists()
    assert not list(blobs.glob("*.incomplete"))


# --- the happy path: download through the fake Hub, train SD3 for real on the snapshot, sample -------


@pytest.fixture(scope="session")
def sd3_from_hub(hub, tmp_path_factory):
    root = tmp_path_factory.mktemp("sd3-from-hub")
    write_sample_pair(root / "data", size=64)
    hf_home = root / "hf-home"
    hub.requests.clear()
    result = glance(*TRAIN, "--model", TINY_SD3, cwd=root, hub=hub, hf_home=hf_home)
    assert result.returncode == 0, result.stderr
    return root, hf_home, result, list(hub.requests)


def test_first_run_downloads_once_with_a_progress_bar(hub, sd3_from_hub):
    root, hf_home, result, requests = sd3_from_hub
    assert f"downloading {TINY_SD3} (revision {hub.repos[TINY_SD3].sha[:12]})" in result.stderr
    bar = result.stderr.split("downloading", 1)[1]
    assert "100%" in bar and "B/s" in bar and "<00:00" in bar  # bytes, rate, time left
    fetched = {r["path"].split("/resolve/", 1)[1].split("/", 1)[1] for r in requests if "/resolve/" in r["path"]}
    assert "transformer/diffusion_pytorch_model.safetensors" in fetched and "model_index.json" in fetched
    assert not {"transformer/diffusion_pytorch_model.bin", "sd3-single-file.safetensors", "README.md"} & fetched
    manifest = load_manifest(root / "output" / "glance.json")
    assert manifest.complete and manifest.family == "sd3"
    assert manifest.model == TINY_SD3 and manifest.model_revision == hub.repos[TINY_SD3].sha
    snapshot = Path(manifest.model_path)
    assert snapshot.is_relative_to(hf_home) and snapshot.name == manifest.model_revision
    for phase in ("slow", "fast"):  # SimpleTuner trained on the snapshot folder, not the Hub id
        used = json.loads((root / "output" / f"glance-{phase}" / "simpletuner_config.json").read_text())
        assert used["pretrained_model_name_or_path"] == str(snapshot)


def test_second_run_and_infer_make_no_hub_requests(hub, sd3_from_hub):
    root, hf_home, _, _ = sd3_from_hub
    hub.requests.clear()
    again = glance(*TRAIN, "--model", TINY_SD3, cwd=root, hub=hub, hf_home=hf_home)
    assert again.returncode == 0, again.stderr
    assert "slow: up to date" in again.stderr and "downloading" not in again.stderr, again.stderr
    assert hub.requests == []  # the cache answered
    sampled = glance(
        "infer", "a red circle", "--device", "cpu", "--out", "sd3.png", "--json",
        cwd=root, hub=hub, hf_home=hf_home, HF_HUB_OFFLINE="1",
    )  # fmt: skip
    assert sampled.returncode == 0, sampled.stderr
    assert (root / "sd3.png").is_file() and json.loads(sampled.stdout)["images"][0]["record"]["family"] == "sd3"


# --- Qwen-Image trains for real too (FLUX: tests/support/training.py; SD3: above) --------------------


def test_qwen_image_trains_both_phases_and_samples(tiny, tmp_path):
    write_sample_pair(tmp_path / "data", size=64)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("GLANCE_SIMPLETUNER", None)
    model = str(tiny("qwen_image").model)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "glance", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
        )

    trained = run(*TRAIN, "--model", model)
    assert trained.returncode == 0, trained.stderr
    manifest = load_manifest(tmp_path / "output" / "glance.json")
    assert manifest.complete and manifest.family == "qwen_image" and manifest.model_path == model
    sampled = run("infer", "a red circle", "--device", "cpu", "--out", "qwen.png", "--json")
    assert sampled.returncode == 0, sampled.stderr
    summary = json.loads(sampled.stdout)["images"][0]["record"]
    assert (tmp_path / "qwen.png").is_file() and summary["family"] == "qwen_image"


def test_an_eval_scorer_model_is_fetched_once_through_the_same_download(hub, tmp_path):
    """`glance eval`'s scorer models take the base models' download path: disk check, one line, the byte bar."""
    from glance.tiny.scorers import build_tiny_scorer

    repo = "glance-test/tiny-clip"
    hub.add_repo(repo, build_tiny_scorer("clip", tmp_path / "clip"))
    env = dict(os.environ, HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1")
    env.pop("HF_HUB_OFFLINE", None)
    fetch = f"from glance.scorer_models import scorer_folder; print(scorer_folder({repo!r}, scorer='clip'))"

    def run(**extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", fetch], env={**env, **extra}, capture_output=True, text=True,
                              timeout=300)  # fmt: skip

    first = run()
    assert first.returncode == 0, first.stderr
    folder = Path(first.stdout.strip())
    assert (folder / "config.json").is_file() and list(folder.glob("*.safetensors"))
    assert first.stderr.startswith(f"downloading the clip scorer {repo} (revision "), first.stderr
    again = run(HF_HUB_OFFLINE="1")  # from the cache, offline, without a word
    assert (again.returncode, again.stdout.strip(), again.stderr) == (0, str(folder), "")
