"""A Glance pair on the Hub: build the folder a finished run is pushed as, push it in one commit, fetch it back.

The pushed folder holds both LoRA files (with their adapter metadata), the run manifest with every
local path removed, the sample images rendered for this run (their PNG records stripped of local
paths too), the training image only when asked, and the model card (glance/card.py).
huggingface_hub is imported inside the functions: `glance --help` stays light.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from glance.card import Sample, TrainingImage, render_card
from glance.families import GlanceError, get_family, is_local_model
from glance.files import write_atomic
from glance.hub_errors import one_line_hub_errors
from glance.infer_options import SAMPLES_DIR
from glance.loras import check_pair_fits
from glance.manifest import MANIFEST_NAME, PHASES, WEIGHTS_NAME, RunManifest, load_finished_run, load_manifest
from glance.simpletuner import add_adapter_metadata

CARD_NAME = "README.md"
SAMPLES_REPO_DIR = "images"  # in the repo: this push's samples, and only these
COMFYUI_DIR = "comfyui"  # in the repo: the files `glance export comfyui` writes
LOGIN_HINT = "run `hf auth login` or set HF_TOKEN to a token with write access"


@dataclass(frozen=True)
class PushOptions:
    repo_id: str
    output_dir: Path = Path("output")
    base_model: str | None = None  # the card's base model; needed when the run used a local folder
    private: bool = False
    revision: str | None = None  # a branch; created when missing
    include_training_image: bool = False
    sample_prompts: tuple[str, ...] = ()  # render these first (glance infer), then push them too
    message: str | None = None


@dataclass(frozen=True)
class PushResult:
    folder: Path
    files: list[str]
    card: str
    samples: list[Sample] = field(default_factory=list)  # the pushed images and their prompts
    skipped: list[str] = field(default_factory=list)  # images found beside them and why they are not pushed
    url: str | None = None  # the commit, when pushed
    commit: str | None = None


def check_repo_id(repo_id: str) -> None:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise GlanceError(f"{repo_id!r} is not a valid repo id (namespace/name): {exc}") from None
    if repo_id.count("/") != 1:
        raise GlanceError(f"{repo_id!r} is not a valid repo id: give it as namespace/name, e.g. you/my-glance-pair")


def card_base_model(manifest: RunManifest, base_model: str | None) -> str:
    """The hub id the card points at: the run's own model, or --base-model for a run on a local folder."""
    if base_model is not None:
        if is_local_model(base_model) or Path(base_model).is_absolute():
            raise GlanceError(f"--base-model {base_model}: give the base model's Hub id, not a folder")
        return base_model
    if is_local_model(manifest.model) or Path(manifest.model).is_absolute():
        raise GlanceError(
            f"the run trained on a local folder ({manifest.model}); pass --base-model with the Hub id of "
            "the model in that folder, for the card"
        )
    return manifest.model


def check_base_model(manifest: RunManifest, manifest_path: Path, base_model: str) -> None:
    """The card's base model must be one the pair fits (glance infer's check, from the files' shapes)."""
    weights = {phase: manifest.lora_dir(phase, manifest_path) / WEIGHTS_NAME for phase in PHASES}
    try:
        check_pair_fits(weights, base_model)
    except GlanceError as exc:
        raise GlanceError(f"{exc}; the card must name the model the run trained on ({manifest.model})") from None


def public_manifest(manifest: RunManifest, base_model: str) -> str:
    """The manifest as pushed: the base model's hub id, LoRA folders relative to the repo, no local paths."""
    data = manifest.model_dump(mode="json", exclude={"written_configs", "model_path"})
    if base_model != manifest.model:  # the revision was of the folder or repo trained on, not of this one
        data["model_revision"] = None
    data["model"] = base_model
    data["phases"] = {phase: {**record, "lora_dir": f"glance-{phase}"} for phase, record in data["phases"].items()}
    RunManifest.model_validate(data)  # still a manifest `glance infer` reads
    return json.dumps(data, indent=2) + "\n"


def find_samples(manifest: RunManifest, output_dir: Path, search: list[Path]) -> tuple[list[Path], list[str]]:
    """PNGs in `search` folders that `glance infer` rendered with this run's two LoRAs, and why each other
    glance image there was passed over.

    A PNG's record names the LoRA files by content hash, so a run folder copied or moved keeps its
    samples (images from before the hashes were recorded are matched by the LoRA folders' paths).
    """
    from glance.files import file_sha256
    from glance.records import read_png_parameters

    manifest_path = Path(output_dir) / MANIFEST_NAME
    loras = {phase: manifest.lora_dir(phase, manifest_path) for phase in PHASES}
    hashes = {phase: file_sha256(folder / WEIGHTS_NAME) for phase, folder in loras.items()}

    def same_pair(used: dict) -> bool:
        if all("sha256" in used.get(phase, {}) for phase in PHASES):
            return all(used[phase]["sha256"] == hashes[phase] for phase in PHASES)
        return all(Path(used.get(phase, {}).get("path", "")).resolve() == loras[phase] for phase in PHASES)

    found: list[Path] = []
    skipped: list[str] = []
    for folder in dict.fromkeys(Path(f).resolve() for f in search):
        for png in sorted(folder.glob("*.png")) if folder.is_dir() else []:
            try:
                record = read_png_parameters(png)
            except (GlanceError, ValueError):
                continue  # not glance's
            if record.get("kind") != "glance":
                skipped.append(f"{png}: the base model's image (--compare), not the pair's")
            elif same_pair(record.get("loras") or {}):
                found.append(png)
            else:
                skipped.append(f"{png}: rendered with other LoRAs than this run's")
    return found, skipped


def render_samples(output_dir: Path, prompts: tuple[str, ...]) -> list[Path]:
    """Render the prompts with `glance infer` (one load) into OUTPUT_DIR/samples, replacing earlier samples."""
    from glance.infer import options_from_manifest, run_infer

    out = Path(output_dir) / SAMPLES_DIR / "sample.png"  # several prompts: sample-1.png, sample-2.png, ...
    run = run_infer(options_from_manifest(output_dir, prompts=list(prompts), out=out, force=True))
    return [image.image for image in run.images]


def _public_png(source: Path, base_model: str) -> tuple[bytes, Sample]:
    """The PNG with its glance record's local paths replaced by repo paths (pixels untouched)."""
    from io import BytesIO

    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from glance.comfyui import PNG_PROMPT_KEY, png_prompt
    from glance.records import PNG_GLANCE_KEY, PNG_PARAMETERS_KEY, parameters_line, read_png_parameters

    record = read_png_parameters(source)
    record["model"] = base_model
    for phase, lora in (record.get("loras") or {}).items():
        lora["path"] = f"glance-{phase}"
    info = PngInfo()
    info.add_text(PNG_PARAMETERS_KEY, parameters_line(record))
    info.add_text(PNG_GLANCE_KEY, json.dumps(record, sort_keys=True))
    info.add_text(PNG_PROMPT_KEY, png_prompt(record))  # its ComfyUI workflow, for the base model's file names
    buffer = BytesIO()
    with Image.open(source) as image:
        image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue(), Sample("", record["prompt"], record["seed"])


def build_folder(options: PushOptions, folder: Path, *, search: list[Path] | None = None) -> PushResult:
    """Write everything the repo will hold into `folder` (emptied first); nothing is uploaded."""
    manifest = load_finished_run(options.output_dir)
    base_model = card_base_model(manifest, options.base_model)
    manifest_path = Path(options.output_dir) / MANIFEST_NAME
    check_base_model(manifest, manifest_path, base_model)
    family = get_family(manifest.family)
    if options.sample_prompts:
        render_samples(options.output_dir, options.sample_prompts)

    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    files: dict[str, bytes] = {}
    for phase in PHASES:
        weights = manifest.lora_dir(phase, manifest_path) / WEIGHTS_NAME
        if not weights.is_file():
            raise GlanceError(f"the {phase} LoRA is missing: {weights}; run `glance train` again")
        files[f"glance-{phase}/{WEIGHTS_NAME}"] = weights.read_bytes()
    files[MANIFEST_NAME] = public_manifest(manifest, base_model).encode()

    samples: list[Sample] = []
    # The run's own folder only (glance infer renders into OUTPUT_DIR/samples): never the current folder's strays.
    search = search if search is not None else [Path(options.output_dir) / SAMPLES_DIR, Path(options.output_dir)]
    found, skipped = find_samples(manifest, options.output_dir, search)
    for index, png in enumerate(found, start=1):
        data, sample = _public_png(png, base_model)
        path = f"{SAMPLES_REPO_DIR}/sample-{index}.png"
        files[path] = data
        samples.append(Sample(path, sample.prompt, sample.seed))

    training = None
    if options.include_training_image:
        training, training_files = _training_files(Path(options.output_dir))
        files.update(training_files)

    # The ComfyUI files (glance/export.py), their workflow on the card's first prompt; never the private caption.
    from glance.comfyui import default_files
    from glance.export import comfyui_files

    prompt = samples[0].prompt if samples else (training.caption if training else "your prompt")
    comfyui = comfyui_files(
        manifest,
        manifest_path,
        prompt=prompt,
        seed=samples[0].seed if samples else 0,
        base_model=base_model,
        files=default_files(manifest.family, base_model),
    )
    files.update({f"{COMFYUI_DIR}/{name}": data for name, data in comfyui.files.items()})

    from glance.eval_report import card_section

    evaluation = card_section(Path(options.output_dir))  # the run's `glance eval`, when it has one
    card = render_card(manifest, repo_id=options.repo_id, base_model=base_model, samples=samples, training=training,
                       evaluation=evaluation)  # fmt: skip
    files[CARD_NAME] = card.encode()
    for path, data in files.items():
        write_atomic(folder / path, data)
    for phase in PHASES:  # LoRAs trained outside glance may lack it: diffusers would load them at alpha = rank
        add_adapter_metadata(
            folder / f"glance-{phase}" / WEIGHTS_NAME,
            rank=manifest.rank,
            alpha=family.recipe.alpha_per_rank * manifest.rank,
        )
    return PushResult(folder, sorted(files), card, samples, skipped)


def _training_files(output_dir: Path) -> tuple[TrainingImage, dict[str, bytes]]:
    """The staged pair (OUTPUT_DIR/dataset): the image and its caption, as trained on."""
    dataset = output_dir / "dataset"
    captions = sorted(dataset.glob("*.txt")) if dataset.is_dir() else []
    images = [p for p in sorted(dataset.iterdir()) if p.suffix.lower() not in (".txt", ".json")] if captions else []
    if len(captions) != 1 or len(images) != 1:
        raise GlanceError(f"--include-training-image: no staged image and caption in {dataset}")
    caption = captions[0].read_text(encoding="utf-8").strip()
    path = f"training/{images[0].name}"
    return TrainingImage(path, caption), {
        path: images[0].read_bytes(),
        f"training/{captions[0].name}": captions[0].read_bytes(),
    }


def push(options: PushOptions, *, emit: Callable[[str], None] = print) -> PushResult:
    """Build the folder in a temporary place and upload it as one commit (it lands whole or not at all).

    The commit also removes the samples an earlier push left in the repo that this push does not replace.
    """
    from huggingface_hub import HfApi, constants, get_token

    check_repo_id(options.repo_id)
    load_finished_run(options.output_dir)  # before asking for a token: the cheaper fault first
    if constants.HF_HUB_OFFLINE:
        raise GlanceError("HF_HUB_OFFLINE is set: pushing needs the Hub; unset HF_HUB_OFFLINE (or try --dry-run)")
    token = get_token()
    if token is None:
        raise GlanceError(f"not logged in to the Hub: {LOGIN_HINT}")
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="glance-push-") as staging:
        built = build_folder(options, Path(staging) / "repo")
        emit(f"uploading {len(built.files)} files to {options.repo_id} ...")
        with one_line_hub_errors(options.repo_id, revision=options.revision, access="write"):
            api.create_repo(options.repo_id, private=options.private, exist_ok=True)
            if options.revision and options.revision != "main":
                api.create_branch(options.repo_id, branch=options.revision, exist_ok=True)
            commit = api.upload_folder(
                folder_path=built.folder,
                repo_id=options.repo_id,
                revision=options.revision,
                commit_message=options.message or "Glance LoRA pair (glance push)",
                # An earlier push's samples go in this same commit; the card shows only this push's.
                delete_patterns=[f"{SAMPLES_REPO_DIR}/*"],
            )
    return PushResult(
        built.folder, built.files, built.card, built.samples, built.skipped, url=commit.commit_url, commit=commit.oid
    )


def fetch_pair(repo_id: str, revision: str | None = None) -> Path:
    """A pushed pair's manifest and LoRA files, downloaded into the Hugging Face cache; its local folder.

    The repo is looked up first, so a refusal or an unreachable Hub is one line in seconds (the same
    lines as a base model's, glance/hub_errors.py); offline, or with the Hub out of reach, a pair
    already in the cache is used as it is.
    """
    from huggingface_hub import constants, snapshot_download

    from glance.hub import hub_listing, offline_refusal, remember_ref
    from glance.hub_errors import HubUnreachable

    check_repo_id(repo_id)
    files = [MANIFEST_NAME, *(f"glance-{phase}/{WEIGHTS_NAME}" for phase in PHASES)]
    cached = _cached_pair(repo_id, revision, files)
    if constants.HF_HUB_OFFLINE:
        if cached is None:
            raise offline_refusal(repo_id)
        return cached
    try:
        listing = hub_listing(repo_id, revision)
    except HubUnreachable as exc:
        if cached is None:
            raise GlanceError(f"cannot fetch {repo_id}: {exc}") from None
        return cached
    if MANIFEST_NAME not in listing.files:
        raise GlanceError(f"{repo_id} is not a Glance pair: it has no {MANIFEST_NAME}")
    with one_line_hub_errors(repo_id, revision=revision):
        folder = Path(snapshot_download(repo_id, revision=listing.sha, allow_patterns=files))
    remember_ref(repo_id, revision or "main", listing.sha)
    try:
        load_manifest(folder / MANIFEST_NAME)
    except GlanceError:
        raise GlanceError(f"{repo_id} is not a Glance pair: its {MANIFEST_NAME} is not a glance manifest") from None
    return folder


def _cached_pair(repo_id: str, revision: str | None, files: list[str]) -> Path | None:
    """The cached snapshot holding all of `files` at `revision` (default: main), if there is one."""
    from huggingface_hub import try_to_load_from_cache

    found = [try_to_load_from_cache(repo_id, name, revision=revision) for name in files]
    if not all(isinstance(path, str) for path in found):
        return None
    folder = Path(found[0]).parent
    return folder if all(Path(path) == folder / name for path, name in zip(found, files, strict=True)) else None


def default_folder(output_dir: Path) -> Path:
    """Where --dry-run builds the folder it would upload."""
    return Path(output_dir) / "push"
