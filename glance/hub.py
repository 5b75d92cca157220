"""The Hugging Face Hub boundary: turn `--model` into a local diffusers folder before anything runs.

A local folder is used as it is. A Hub id is looked up in the Hugging Face cache; when it is missing
or incomplete it is downloaded once, with huggingface_hub, before SimpleTuner or diffusers start:
only what a diffusers pipeline loads (model_index.json and the component folders it names,
safetensors only), with a progress bar (bytes, rate, ETA). After Ctrl-C the next run fetches only
the files not finished (huggingface_hub 2.x keeps no partial file between runs). Every way the
Hub can say no (gated, not found, refused token, offline; glance/hub_errors.py) and not enough
disk become one `GlanceError` line here, in seconds.

huggingface_hub reads HF_ENDPOINT, HF_HUB_OFFLINE and HF_HOME when it is imported; it is imported
inside these functions only, so `glance --help` stays light.
"""

from __future__ import annotations

import glob
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from glance.families import GlanceError, is_hub_id, model_not_found, read_json
from glance.hub_errors import HubUnreachable, first_line, hub_error, one_line_hub_errors

# Weight formats a diffusers pipeline loaded with use_safetensors=True never reads.
UNSAFE_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".msgpack", ".h5", ".onnx", ".onnx_data", ".gguf", ".ot")
LOOKUP_TIMEOUT_S = 10.0
DISK_MARGIN = 1 << 30  # keep 1 GiB free beyond the download


class ModelSource(BaseModel):
    """Where the base model comes from, and the folder SimpleTuner and diffusers read it from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str  # as named: a Hub id, or the absolute path of a local diffusers folder
    revision: str | None = None  # Hub commit hash, when known
    folder: Path | None = None  # local folder or cached snapshot; None while the download is still to come
    download_bytes: int | None = None  # still to download (lookup only), when the Hub could be asked
    note: str | None = None  # why the folder is not there yet (lookup only)

    @property
    def on_hub(self) -> bool:
        return not Path(self.model).is_absolute()

    @property
    def path_or_id(self) -> str:
        """What a pipeline or SimpleTuner is pointed at: the folder once there is one."""
        return str(self.folder) if self.folder is not None else self.model


def resolve_model(
    model: str,
    *,
    revision: str | None = None,
    fetch: bool = True,
    emit: Callable[[str], None] | None = None,
) -> ModelSource:
    """The local folder of `model`, downloading a Hub model into the HF cache when `fetch` is on.

    With `fetch` off (--dry-run, `glance configs`) nothing is downloaded: a model not yet cached
    comes back without a folder and with a note saying what is still to come.
    """
    emit = emit or _stderr
    local = Path(model).expanduser()
    if local.is_dir():
        return ModelSource(model=str(local.resolve()), folder=local.resolve())
    if not is_hub_id(model):
        raise model_not_found(model)

    from huggingface_hub import constants

    cached = cached_snapshot(model, revision)
    if cached is not None:
        return ModelSource(model=model, revision=cached.name, folder=cached)
    if constants.HF_HUB_OFFLINE:
        if not fetch:
            reason = f"{model} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE=1"
            return ModelSource(model=model, revision=revision, note=f"{reason}: the download is still to come")
        raise offline_refusal(model)

    try:
        listing = hub_listing(model, revision)
    except HubUnreachable as exc:
        reason = f"{model} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and {exc}"
        if not fetch:
            return ModelSource(model=model, revision=revision, note=f"{reason}: the download is still to come")
        raise GlanceError(reason) from None
    if not fetch:
        files = needed_files(listing.files, components=None)
        missing = _missing_bytes(model, files, listing.files)
        return ModelSource(
            model=model,
            revision=listing.sha,
            download_bytes=missing,
            note=f"{model} is not downloaded yet: about {_size(missing)} to download on the first `glance train`",
        )
    folder = download(model, listing, emit=emit)
    remember_ref(model, revision or "main", listing.sha)
    return ModelSource(model=model, revision=listing.sha, folder=folder)


def offline_refusal(repo_id: str) -> GlanceError:
    """The line for a repo that is not in the cache while HF_HUB_OFFLINE forbids asking the Hub."""
    from huggingface_hub import constants

    return GlanceError(
        f"{repo_id} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE=1 forbids "
        "downloading it; run once with the Hub reachable (unset HF_HUB_OFFLINE)"
    )


def cached_snapshot(model: str, revision: str | None = None) -> Path | None:
    """The cached snapshot folder of `model` at `revision` (default: main), if it is complete."""
    from huggingface_hub import try_to_load_from_cache

    index = try_to_load_from_cache(model, "model_index.json", revision=revision)
    if not isinstance(index, str):
        return None
    folder = Path(index).parent
    return folder if is_complete_pipeline(folder) else None


def is_complete_pipeline(folder: Path) -> bool:
    """Every component model_index.json names is there, with its safetensors (all shards)."""
    try:
        components = pipeline_components(read_json(folder / "model_index.json"))
    except GlanceError:
        return False
    for name in components:
        sub = folder / name
        if not sub.is_dir():
            return False
        if (sub / "config.json").is_file() and not any(p.exists() for p in sub.glob("*.safetensors")):
            return False  # a model component (tokenizers and schedulers have no config.json)
        for index in sub.glob("*.safetensors.index.json"):
            shards = set(read_json(index).get("weight_map", {}).values())
            if not all((sub / shard).exists() for shard in shards):
                return False
        if any(not p.exists() for p in sub.iterdir()):  # a cache symlink whose blob is gone
            return False
    return True


def pipeline_components(index: dict) -> list[str]:
    """The component folders a diffusers model_index.json names (entries like ["diffusers", "Class"])."""
    return [
        name
        for name, value in index.items()
        if not name.startswith("_") and isinstance(value, list) and len(value) == 2 and value[1] is not None
    ]


class HubFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    size: int
    blob: str  # the cache's blob name: the LFS sha256, else the git blob id


class HubListing(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sha: str
    files: dict[str, HubFile]


def hub_listing(model: str, revision: str | None) -> HubListing:
    """The commit and file sizes of `model` on the Hub (a request, two if gated).

    Each refusal is its own line (glance/hub_errors.py); HubUnreachable when the Hub cannot be asked.
    """
    from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url

    with one_line_hub_errors(model, revision=revision):
        info = HfApi().model_info(model, revision=revision, files_metadata=True, timeout=LOOKUP_TIMEOUT_S)
        if info.gated:  # the Hub shows a gated repo's listing to anyone; its files answer GatedRepo
            get_hf_file_metadata(hf_hub_url(model, "model_index.json", revision=info.sha), timeout=LOOKUP_TIMEOUT_S)
    files = {}
    for sibling in info.siblings or []:
        lfs = sibling.lfs
        size = lfs.size if lfs is not None else sibling.size
        blob = lfs.sha256 if lfs is not None else sibling.blob_id
        files[sibling.rfilename] = HubFile(path=sibling.rfilename, size=size or 0, blob=blob or "")
    return HubListing(sha=info.sha, files=files)


def needed_files(files: dict[str, HubFile], components: list[str] | None) -> list[str]:
    """What a diffusers pipeline loads: model_index.json and its component folders, safetensors only.

    `components` None (not read yet): every sub-folder counts, an upper bound for a look-up.
    """
    chosen = []
    for path in files:
        top, _, rest = path.partition("/")
        if path == "model_index.json":
            chosen.append(path)
        elif rest and (components is None or top in components) and not path.endswith(UNSAFE_WEIGHTS):
            chosen.append(path)
    return sorted(chosen)


def download(model: str, listing: HubListing, *, emit: Callable[[str], None]) -> Path:
    """Download what the pipeline needs at `listing.sha` into the HF cache; returns the snapshot folder."""
    from huggingface_hub import hf_hub_download

    index_path = hf_hub_download(model, "model_index.json", revision=listing.sha)
    files = needed_files(listing.files, pipeline_components(read_json(Path(index_path))))
    folder = fetch_files(model, listing, files, emit=emit)
    if not is_complete_pipeline(folder):
        raise GlanceError(f"the download of {model} is incomplete in {folder}; run again to resume")
    emit(f"downloaded {model} -> {folder}")
    return folder


def fetch_files(model: str, listing: HubListing, files: list[str], *, emit: Callable[[str], None] | None = None,
                label: str | None = None) -> Path:  # fmt: skip
    """`files` of `model` at `listing.sha` into the HF cache, after a disk check, with one byte bar.

    The one download path of glance: base models (`download`) and eval's scorer models. `label` names
    the download in its first line (default: the model); `emit` prints it (default: stderr).
    """
    from huggingface_hub import constants

    emit = emit or _stderr
    missing = _missing_bytes(model, files, listing.files)
    cache = Path(constants.HF_HUB_CACHE)
    free = shutil.disk_usage(_existing_parent(cache)).free
    if missing + DISK_MARGIN > free:
        raise GlanceError(
            f"not enough disk for {model}: {_size(missing)} to download, {_size(free)} free in {cache}; "
            "free some space or point HF_HOME at a bigger disk"
        )
    emit(
        f"downloading {label or model} (revision {listing.sha[:12]}): {len(files)} files, {_size(missing)} "
        f"into {cache}; Ctrl-C stops, the next run resumes"
    )
    return _download_in_child(model, listing, files, missing)


def _download_in_child(model: str, listing: HubListing, files: list[str], missing: int) -> Path:
    """snapshot_download in a child process, with our byte bar here; Ctrl-C kills the child, then tidies.

    A process, not a thread: huggingface_hub's download threads cannot be stopped, and one that opens
    its next `.incomplete` part after the clean-up would leave it behind. A dead child writes nothing.
    """
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_snapshot_worker, args=(model, listing.sha, files, send), daemon=True)
    child.start()
    send.close()
    bar = _ByteProgress(model, files, listing.files, total=missing)
    outcome: tuple[str, str] | None = None
    interrupted = False
    try:
        while outcome is None and child.is_alive():
            if receive.poll(0.25):
                outcome = receive.recv()
            bar.refresh()
        if outcome is None and receive.poll(0):
            outcome = receive.recv()
        bar.refresh()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        child.kill()  # a no-op once it has ended
        child.join()
        bar.close()
        # Finished files stay in the cache; the next run fetches only the rest. The parts in flight
        # cannot be resumed by huggingface_hub (each download writes its own temporary file) and go.
        for part in bar.partial_files():
            part.unlink(missing_ok=True)
    if interrupted:
        print(
            f"glance: interrupted: the download of {model} stops here; the next run resumes it "
            "(finished files are kept)",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(130)
    if outcome is None:
        outcome = ("failed", f"the download process ended with code {child.exitcode}")
    kind, text = outcome
    if kind == "failed":
        raise GlanceError(f"downloading {model} failed: {text}; run again to resume (finished files are kept)")
    return Path(text)


def _snapshot_worker(model: str, sha: str, files: list[str], send) -> None:
    """The child's whole job: download, then send ("folder", path) or ("failed", one line) back."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent answers Ctrl-C and kills this process
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import disable_progress_bars, logging

    disable_progress_bars()  # huggingface_hub's own bars: one bar of ours over all files instead
    logging.set_verbosity_error()  # its retry warnings: the parent's one line says what failed
    try:
        send.send(("folder", snapshot_download(model, revision=sha, allow_patterns=files)))
    except Exception as exc:  # noqa: BLE001 - every failure goes to the parent as one line
        line = hub_error(exc, model, revision=sha)
        send.send(("failed", str(line) if line is not None else f"{type(exc).__name__}: {first_line(exc)}"))


class _ByteProgress:
    """One tqdm bar over every file: bytes on disk (finished blobs and `.incomplete` parts), rate, ETA."""

    def __init__(self, model: str, files: list[str], hub_files: dict[str, HubFile], total: int):
        from tqdm import tqdm

        self.blobs = _repo_cache(model) / "blobs"
        self.wanted = {hub_files[f].blob: hub_files[f].size for f in files if hub_files[f].blob}
        self.start = self._on_disk()
        self.bar = tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=model,
            file=sys.stderr,
            mininterval=0.5,
            dynamic_ncols=True,
        )

    def partial_files(self) -> list[Path]:
        """The files being written: huggingface_hub downloads each blob to `<blob>.<random>.incomplete`."""
        return [p for blob in self.wanted for p in self.blobs.glob(f"{glob.escape(blob)}*.incomplete")]

    def _on_disk(self) -> int:
        done = 0
        for blob, size in self.wanted.items():
            if (self.blobs / blob).is_file():
                done += size
                continue
            for part in self.blobs.glob(f"{glob.escape(blob)}*.incomplete"):
                try:
                    done += min(size, part.stat().st_size)
                except OSError:  # finished or removed meanwhile
                    pass
        return done

    def refresh(self) -> None:
        got = max(0, self._on_disk() - self.start)
        if got > self.bar.n:
            self.bar.update(got - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def remember_ref(model: str, revision: str, sha: str) -> None:
    """Record `revision` -> `sha` in the cache's refs/, as huggingface_hub does, so the next look-up is local.

    (The download itself asks for the commit hash, which is immutable, and so records no ref.)
    """
    if revision == sha:
        return
    from glance.files import write_atomic

    write_atomic(_repo_cache(model) / "refs" / revision, sha)


def _missing_bytes(model: str, files: list[str], hub_files: dict[str, HubFile]) -> int:
    """Bytes of `files` not yet complete in the cache's blobs (a partial `.incomplete` still counts).

    Identical files (two tokenizer folders with the same tokenizer.json) are one blob, fetched once.
    """
    blobs = _repo_cache(model) / "blobs"
    sizes = {hub_files[f].blob or f"file:{f}": hub_files[f].size for f in files}  # no blob id: the file alone
    return sum(size for key, size in sizes.items() if key.startswith("file:") or not (blobs / key).is_file())


def _repo_cache(model: str) -> Path:
    """The model's folder in the HF cache (blobs/, refs/, snapshots/), as huggingface_hub lays it out."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    return Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=model, repo_type="model")


def _existing_parent(path: Path) -> Path:
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return path


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
