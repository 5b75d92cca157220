"""The scorer models of `glance eval` (CLIP, DINOv2): a local folder, or a Hub repo through glance's download path.

A Hub repo is looked up in the Hugging Face cache first (offline afterwards); when missing it is
downloaded once with glance/hub.py's machinery: one byte bar over all files, Ctrl-C resumable, the
Hub's refusals as one line each (glance/hub_errors.py). Only what transformers loads with
safetensors is fetched: the JSON/text files and the safetensors weights at the repo's top level.
"""

from __future__ import annotations

from pathlib import Path

from glance.families import GlanceError

DEFAULT_SCORER_MODELS = {"clip": "openai/clip-vit-base-patch32", "dino": "facebook/dinov2-small"}
_WANTED = (".json", ".txt", ".model", ".safetensors")


def scorer_folder(model: str, *, scorer: str) -> Path:
    """The local folder of scorer `scorer`'s model `model` (a folder, or a Hub id fetched into the cache)."""
    from glance.families import is_hub_id

    local = Path(model).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file() or not any(local.glob("*.safetensors")):
            raise GlanceError(f"--scorer-model {model}: not a transformers model folder (config.json, *.safetensors)")
        return local.resolve()
    if not is_hub_id(model):
        raise GlanceError(f"--scorer-model {model}: neither a folder nor a Hub id (owner/name)")
    cached = _cached(model)
    if cached is not None:
        return cached
    from huggingface_hub import constants

    from glance.hub import fetch_files, hub_listing, remember_ref
    from glance.hub_errors import HubUnreachable

    if constants.HF_HUB_OFFLINE:
        raise GlanceError(
            f"the {scorer} scorer's model {model} is not in the Hugging Face cache and HF_HUB_OFFLINE=1 forbids "
            f"downloading it; run once online, or pass --scorer-model {scorer}=FOLDER"
        )
    try:
        listing = hub_listing(model, None)
    except HubUnreachable as exc:
        raise GlanceError(f"the {scorer} scorer's model {model} is not in the Hugging Face cache and {exc}") from None
    files = sorted(f for f in listing.files if "/" not in f and f.endswith(_WANTED))
    if not any(f.endswith(".safetensors") for f in files):
        raise GlanceError(f"{model} has no safetensors weights; glance loads weights from safetensors only")
    folder = fetch_files(model, listing, files, label=f"the {scorer} scorer {model}")
    remember_ref(model, "main", listing.sha)
    return folder


def _cached(model: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(model, "config.json")
    if not isinstance(config, str):
        return None
    folder = Path(config).parent
    return folder if any(p.exists() for p in folder.glob("*.safetensors")) else None
