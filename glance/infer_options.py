"""What one `glance infer` run is asked for: prompts, seeds, the model, the pair and its lists, device and memory.

`options_from_manifest` (glance/infer.py) fills them from a training run. The options cross into the
worker processes of --num-processes as JSON (glance/spread.py), so they are a pydantic model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from glance.memory.plans import QuantizeChoice
from glance.schedule import TimestepLists

DEFAULT_SIZE = 1024  # without a manifest: the Glance paper's training resolution
SAMPLES_DIR = "samples"  # in a run folder: where `glance infer` renders by default and `glance push` looks
DEFAULT_IMAGE_NAME = "glance.png"

DeviceChoice = Literal["auto", "cuda", "mps", "cpu"]
DtypeChoice = Literal["auto", "bfloat16", "float16", "float32"]


class InferOptions(BaseModel):
    """Everything one `glance infer` run needs; `options_from_manifest` fills it from a training run.

    `prompt=` and `seed=` (one image) are accepted for `prompts=[...]` and `seeds=[...]`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompts: list[str] = Field(min_length=1)
    model: str  # hub id or local diffusers folder
    model_revision: str | None = None  # a hub model's commit (the one trained on, from the manifest)
    family: str | None = None  # detected from the model when left out
    lists: TimestepLists  # the slow and fast lists the LoRAs were trained on
    slow_lora: Path
    fast_lora: Path
    out: Path = Path(DEFAULT_IMAGE_NAME)  # one image; several are numbered beside it (glance-001.png, ...)
    seeds: list[int] = Field([0], min_length=1)
    width: int = Field(DEFAULT_SIZE, ge=16)
    height: int = Field(DEFAULT_SIZE, ge=16)
    guidance: float | None = None  # FLUX: embedded guidance; SD3: CFG scale. Default: the family recipe
    negative_prompt: str | None = None  # default: the family recipe (Qwen-Image: " ")
    true_cfg: float | None = None  # default: the family recipe (Qwen-Image: 5)
    device: DeviceChoice = "auto"
    dtype: DtypeChoice = "auto"
    cpu_offload: bool = False
    quantize: QuantizeChoice = "auto"  # the memory plan (glance/memory/): auto fits the GPU it runs on
    gpu_memory: float | None = Field(None, gt=0)  # GiB to plan for instead of nvidia-smi's figure
    compare: list[int] | None = None  # also render the base model, without LoRAs, at each N-step schedule
    num_processes: int = Field(1, ge=1)  # processes (one pipeline and device each) sharing the images
    force: bool = False

    @model_validator(mode="before")
    @classmethod
    def _one_image(cls, values):
        if isinstance(values, dict):
            values = dict(values)
            if "prompt" in values:
                values["prompts"] = [values.pop("prompt")]
            if "seed" in values:
                values["seeds"] = [values.pop("seed")]
        return values

    @field_validator("out")
    @classmethod
    def _folder_takes_the_default_name(cls, out: Path) -> Path:
        """A folder (one that exists, or a path without a suffix) gets glance.png inside it."""
        return out / DEFAULT_IMAGE_NAME if out.is_dir() or not out.suffix else out

    @field_validator("compare", mode="before")
    @classmethod
    def _compare_steps(cls, compare):
        steps = [compare] if isinstance(compare, int) else compare  # one count, as before lists
        if steps is not None and (not steps or min(steps) < 1 or len(set(steps)) != len(steps)):
            raise ValueError("compare takes distinct step counts of at least 1")
        return steps

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise ValueError("seeds must be distinct and not negative")
        return seeds
