"""The run manifest: what `glance train` did, and what `glance infer` needs to sample it back.

Written to `<output-dir>/glance.json` after each finished phase. LoRA folders are recorded relative
to the manifest's folder, so an output folder can be moved or copied as a whole.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from glance.families import GlanceError, get_family
from glance.files import write_atomic
from glance.schedule import TimestepLists, validate_lists

MANIFEST_NAME = "glance.json"
WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
PhaseName = Literal["slow", "fast"]
PHASES: tuple[PhaseName, PhaseName] = ("slow", "fast")


class PhaseRecord(BaseModel):
    """One finished SimpleTuner run."""

    model_config = ConfigDict(extra="forbid")

    lora_dir: str  # relative to the manifest's folder (or absolute)
    inputs_sha256: str  # of its config, dataloader, pair and model files: a change means retrain
    duration_s: float
    finished_at: datetime


class RunManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    glance_version: str
    model: str  # hub id, or absolute path of a local diffusers folder
    model_revision: str | None = None  # the Hub commit trained on
    model_path: str | None = None  # the folder SimpleTuner read: the local folder or the cached Hub snapshot
    family: str
    resolution: int
    slow_timesteps: list[float]
    fast_timesteps: list[float]
    train_guidance: float | None = None  # FLUX's guidance embedding during training
    seed: int
    steps: int
    rank: int
    learning_rate: float
    # The memory plan it trained with (glance/memory/); infer plans afresh for the GPU it runs on.
    quantize: Literal["none", "int8", "int4", "fp8"] | None = None
    gradient_checkpointing: bool | None = None
    memory_plan: str | None = None  # the plan's one line, estimate and card included
    versions: dict[str, str] = Field(default_factory=dict)
    phases: dict[PhaseName, PhaseRecord] = Field(default_factory=dict)
    # The config files this run wrote (absolute path -> sha256): while they still hold exactly that,
    # they are glance's to replace when an option changes; a file edited since needs --force.
    written_configs: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> RunManifest:
        get_family(self.family)
        validate_lists(tuple(self.slow_timesteps), tuple(self.fast_timesteps))  # the CLI's messages
        return self

    @property
    def lists(self) -> TimestepLists:
        return TimestepLists(tuple(self.slow_timesteps), tuple(self.fast_timesteps))

    @property
    def complete(self) -> bool:
        return all(phase in self.phases for phase in PHASES)

    def lora_dir(self, phase: PhaseName, manifest_path: Path) -> Path:
        record = self.phases.get(phase)
        if record is None:
            raise GlanceError(f"the {phase} phase has not finished in {manifest_path}; run `glance train` first")
        return (Path(manifest_path).parent / record.lora_dir).resolve()

    def save(self, path: Path) -> None:
        write_atomic(path, self.model_dump_json(indent=2) + "\n")


def load_manifest(path: Path) -> RunManifest:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GlanceError(
            f"no run manifest at {path}; run `glance train` first, or pass -o with the run's folder"
        ) from None
    except OSError as exc:
        raise GlanceError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return RunManifest.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "manifest"
        raise GlanceError(f"{path} is not a valid glance manifest ({where}: {first['msg']})") from None


def load_finished_run(output_dir: Path) -> RunManifest:
    """The manifest of a run whose two phases have both finished (what push and export need)."""
    manifest = load_manifest(Path(output_dir) / MANIFEST_NAME)
    missing = [phase for phase in PHASES if phase not in manifest.phases]
    if missing:
        raise GlanceError(
            f"the run in {output_dir} is incomplete: the {' and '.join(missing)} phase has not finished; "
            "run `glance train` first"
        )
    return manifest


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape the result, from metadata (no heavy imports)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("glance", "simpletuner", "diffusers", "torch", "transformers", "peft"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found
