"""The SimpleTuner boundary: the three JSON files it reads, and the command and environment of a run.

Everything glance knows about SimpleTuner 4.10.1's quirks lives here (../shared/FACTS.md):
- there is no `simpletuner train --config FILE`; `--env PATH/TO/FILE.json` loads a JSON config;
- a JSON list becomes repeated flags, so `flow_custom_timesteps` must be one comma string;
- `max_train_steps` needs `num_train_epochs: 0`; the defaults for batch size, learning rate and
  caption dropout break a one-image run, so every value that matters is written out;
- on a machine without CUDA, `Tensor.pin_memory()` in its collate step raises; a sitecustomize
  shim (glance/_simpletuner_cpu/) makes it a no-op inside the child process only;
- its final LoRA file lacks the adapter config, so diffusers would load it at alpha = rank;
  `add_adapter_metadata` writes it in.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from glance.families import GlanceError

SIMPLETUNER_VERSION = "4.10.1"
INSTALL_HINT = f"pip install 'simpletuner=={SIMPLETUNER_VERSION}' 'transformers<5.23'"
CPU_SHIM_DIR = Path(__file__).parent / "_simpletuner_cpu"
# Inherited variables that would make SimpleTuner load another config than ours.
CONFIG_VARIABLES = (
    "CONFIG_PATH",
    "CONFIG_BACKEND",
    "CONFIG_TYPE",
    "ENV",
    "SIMPLETUNER_ENV",
    "SIMPLETUNER_ENVIRONMENT",
    "SIMPLETUNER_CONFIG_BACKEND",
    "SIMPLETUNER_CONFIG_DIR",
)


class ImageDataset(BaseModel):
    """The one image/caption pair, as a SimpleTuner local dataset."""

    model_config = ConfigDict(extra="forbid")

    id: str = "glance-pair"
    type: Literal["local"] = "local"
    instance_data_dir: str  # holds only the staged pair: SimpleTuner writes bucket files into it
    caption_strategy: Literal["textfile"] = "textfile"  # reads <image stem>.txt
    resolution: int
    resolution_type: Literal["pixel_area"] = "pixel_area"
    minimum_image_size: int = 0  # glance checks the size itself; never drop the only image
    repeats: int = 0
    cache_dir_vae: str  # each phase its own (glance/run_plan.py): two phases at once never write one cache


class TextEmbedsDataset(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = "glance-text-embeds"
    type: Literal["local"] = "local"
    dataset_type: Literal["text_embeds"] = "text_embeds"
    default: bool = True
    cache_dir: str  # each phase its own, like the VAE cache


class DataloaderConfig(BaseModel):
    """multidatabackend-PHASE.json: a JSON list of datasets."""

    image: ImageDataset
    text_embeds: TextEmbedsDataset

    def to_json(self) -> list[dict]:
        return [self.image.model_dump(), self.text_embeds.model_dump()]


QuantoPrecision = Literal["int8-quanto", "int4-quanto", "fp8-quanto"]


class TrainingConfig(BaseModel):
    """One phase's config.json. Unknown keys are refused here, as SimpleTuner would refuse them."""

    model_config = ConfigDict(extra="forbid")

    model_type: Literal["lora"] = "lora"
    model_family: str
    # The family's code path within model_family (Family.flavour_for); None: SimpleTuner's default for a path.
    model_flavour: str | None = None
    pretrained_model_name_or_path: str
    data_backend_config: str
    output_dir: str
    resolution: int
    resolution_type: Literal["pixel_area"] = "pixel_area"
    train_batch_size: Literal[1] = 1
    max_train_steps: int = Field(gt=0)
    num_train_epochs: Literal[0] = 0  # required alongside max_train_steps
    learning_rate: float = Field(gt=0)
    lr_scheduler: Literal["constant_with_warmup"] = "constant_with_warmup"
    lr_warmup_steps: int = Field(ge=0)
    lora_rank: int = Field(gt=0)
    lora_alpha: int = Field(gt=0)
    caption_dropout_probability: float = 0.0
    flow_custom_timesteps: str  # "1000.0,979.1915,...": a list would become repeated flags
    flow_timesteps_mode: Literal["fixed-list"] = "fixed-list"
    # True skips a family's own respacing of the sampled sigmas (Chroma squares them: chroma/model.py:854-865);
    # the custom list returns before the uniform branch itself (common.py:4975), so the list is what trains.
    flow_use_uniform_schedule: bool | None = None
    # True: never load a flavour's "assistant" LoRA (downloaded from the Hub at run time: common.py:645-680).
    disable_assistant_lora: bool | None = None
    mixed_precision: Literal["bf16", "no"]
    optimizer: str
    seed: int
    validation_disable: bool = True
    disable_benchmark: bool = True
    report_to: Literal["none"] = "none"
    flux_guidance_mode: Literal["constant"] | None = None
    flux_guidance_value: float | None = None
    # The memory plan (glance/memory/). SimpleTuner 4.10.1 checkpoints by default; glance always says which.
    gradient_checkpointing: bool = True
    base_model_precision: QuantoPrecision | None = None  # the transformer; the LoRA itself stays bf16
    quantize_via: Literal["cpu"] | None = None  # default "accelerator" first moves the bf16 model to the GPU
    text_encoder_1_precision: QuantoPrecision | None = None  # only the largest text encoder, only when needed
    text_encoder_2_precision: QuantoPrecision | None = None
    text_encoder_3_precision: QuantoPrecision | None = None

    def to_json(self) -> dict:
        return self.model_dump(exclude_none=True)


def dump_json(data: dict | list) -> str:
    import json

    return json.dumps(data, indent=2) + "\n"


def parser_check(config: TrainingConfig):
    """Run SimpleTuner's own argument parser over `config` (imports SimpleTuner: seconds).

    Returns SimpleTuner's parsed namespace; raises GlanceError with its complaint when it would
    refuse the file.
    """
    import contextlib
    import io

    from simpletuner.helpers.configuration.cli_utils import mapping_to_cli_args
    from simpletuner.helpers.configuration.cmd_args import parse_cmdline_args

    captured = io.StringIO()

    def refusal(fallback: str) -> GlanceError:  # the last thing SimpleTuner printed says why
        said = [line for line in captured.getvalue().splitlines() if line.strip()]
        return GlanceError(f"SimpleTuner refuses the config: {said[-1] if said else fallback}")

    try:
        with contextlib.redirect_stderr(captured), contextlib.redirect_stdout(captured):
            parsed = parse_cmdline_args(input_args=mapping_to_cli_args(config.to_json()), exit_on_error=True)
    except ValueError as exc:  # SimpleTuner's own checks
        raise GlanceError(f"SimpleTuner refuses the config: {exc}") from None
    except SystemExit as exc:  # argparse
        raise refusal(f"exit code {exc.code}") from None
    if parsed is None:
        raise refusal("no reason given")
    return parsed


def add_adapter_metadata(weights: Path, *, rank: int, alpha: int) -> bool:
    """Write the LoRA's adapter config into its file, as diffusers expects; True when it was missing.

    SimpleTuner 4.10.1's final save (unlike its checkpoints) writes no `lora_adapter_metadata`, so
    diffusers loads the LoRA with alpha = rank: at a quarter of the strength it was trained at with
    glance's alpha = 4 x rank. Only the safetensors header changes (no torch needed); the tensor
    bytes are copied as they are and the file is replaced atomically.
    """
    import json
    import struct

    from glance.files import write_atomic

    raw = Path(weights).read_bytes()
    try:
        (length,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8 : 8 + length])
        metadata = header.get("__metadata__") or {}
    except (struct.error, ValueError, AttributeError) as exc:
        raise GlanceError(f"{weights} is not a readable safetensors file ({exc})") from None
    if "lora_adapter_metadata" in metadata:
        return False
    modules = sorted(
        {key.removeprefix("transformer.").rsplit(".lora_", 1)[0] for key in header if key != "__metadata__"}
    )
    # The layout of diffusers' save_lora_weights: LoraConfig fields, prefixed by the component.
    config = {"transformer.r": rank, "transformer.lora_alpha": alpha, "transformer.target_modules": modules}
    header["__metadata__"] = {**metadata, "format": "pt", "lora_adapter_metadata": json.dumps(config, sort_keys=True)}
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # keep the tensor data 8-byte aligned, as safetensors writes it
    write_atomic(weights, struct.pack("<Q", len(encoded)) + encoded + raw[8 + length :])
    return True


def find_simpletuner() -> Path:
    """The `simpletuner` executable: $GLANCE_SIMPLETUNER, else PATH, else beside this Python."""
    override = os.environ.get("GLANCE_SIMPLETUNER")
    if override:
        path = Path(override).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise GlanceError(
                f"GLANCE_SIMPLETUNER points at {path}, which is not an executable; install with: {INSTALL_HINT}"
            )
        return path
    found = shutil.which("simpletuner") or shutil.which("simpletuner", path=str(Path(sys.executable).parent))
    if found is None:
        raise GlanceError(
            f"simpletuner is not installed (not on PATH nor beside {sys.executable}); install it with: {INSTALL_HINT}"
        )
    return Path(found)


def phase_command(simpletuner: Path, config_path: Path) -> list[str]:
    """`simpletuner train --env FILE.json`: SimpleTuner loads a JSON config named by its path."""
    return [str(simpletuner), "train", "--env", str(Path(config_path).resolve())]


def phase_env(
    simpletuner: Path,
    *,
    cuda: bool,
    gpus: str | None = None,
    accelerate_config: Path | None = None,
    base: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment of one phase's child process.

    Starts from `base` (default: this process's environment), drops the variables that would point
    SimpleTuner at another config, forbids Hub look-ups (the model is a local folder by now), and
    puts the folder of `simpletuner` first on PATH (it starts `accelerate` by name).
    """
    env = dict(os.environ if base is None else base)
    for name in CONFIG_VARIABLES:
        env.pop(name, None)
    bin_dirs = [str(simpletuner.parent), str(Path(sys.executable).parent)]
    env["PATH"] = os.pathsep.join(dict.fromkeys([*bin_dirs, *env.get("PATH", "").split(os.pathsep)]))
    env["CONFIG_BACKEND"] = "json"
    env["MIXED_PRECISION"] = "bf16" if cuda else "no"
    env["PYTHONUNBUFFERED"] = "1"
    env["TOKENIZERS_PARALLELISM"] = "false"
    env["HF_HUB_OFFLINE"] = "1"  # glance resolved the model to a local folder first: no Hub traffic in a phase
    if not cuda:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(CPU_SHIM_DIR), env.get("PYTHONPATH")) if p)
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpus
    if accelerate_config is not None:
        env["ACCELERATE_CONFIG_PATH"] = str(Path(accelerate_config).resolve())
    return env


ACCELERATE_PORT = 29500  # accelerate's default rendezvous port; the fast phase takes the next (both may run at once)


def accelerate_config_yaml(num_processes: int, mixed_precision: str, port: int = ACCELERATE_PORT) -> str:
    """An accelerate config for `num_processes` GPUs on one machine (multi-GPU data parallel)."""
    return (
        "compute_environment: LOCAL_MACHINE\n"
        "distributed_type: MULTI_GPU\n"
        "machine_rank: 0\n"
        "main_training_function: main\n"
        f"mixed_precision: {mixed_precision}\n"
        "num_machines: 1\n"
        f"num_processes: {num_processes}\n"
        "gpu_ids: all\n"
        f"main_process_port: {port}\n"
        "rdzv_backend: static\n"
        "same_network: true\n"
        "use_cpu: false\n"
        "dynamo_config: {}\n"
    )
