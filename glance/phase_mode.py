"""Both phases at once, or one after the other: what `glance train --phases auto|parallel|sequential` runs.

The slow and the fast LoRA are independent (each starts from the same frozen base), so their two
`simpletuner train` processes can run at once:
- on their own GPUs when there are at least two GPU sets (each process sees only its own through
  CUDA_VISIBLE_DEVICES: slow the first --num-processes GPUs, fast the next);
- sharing one GPU (set) when the memory plan says two fit: each phase's estimated peak twice, plus a
  margin, within the card (glance/memory/plans.py, `phases_per_gpu=2`);
- on the CPU, where each process gets its share of the cores.
`auto` takes parallel only where it fits and is expected to be faster:
- own GPUs: always (nothing is shared but the disk);
- one GPU: when the plan for two at once is the very plan of one alone (no checkpointing or
  quantization added for it), so the steps cost what they cost and the start-ups (model load and
  caching, ~110 s of a FLUX-size phase on an H100) overlap; benchmarks/gpu_check.py --case parallel
  measures it;
- the CPU: as measured here, see CPU_MEASURED.
Each phase has its own working folder, dataloader and caches (glance/run_plan.py), so nothing two
phases write can collide, whichever way they run.

Nothing here imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict

from glance.families import GlanceError
from glance.manifest import PHASES, PhaseName
from glance.memory.plans import TrainingPlan

PhasesChoice = Literal["auto", "parallel", "sequential"]

# Parallel / sequential wall time of `glance train` on 2 CPU cores (benchmarks/run.py --only phases,
# 2026-12-01, the fastest of each): the tiny FLUX (4 steps, 128 px; two runs each: 352 and 398 s against
# 572 and 772 s) and the shipped shapes model (the demo's 60 steps, 64 px; 527 against 785 s), both phases
# through the real SimpleTuner. The CPU time was the same either way (tiny 155/149 against 154/171 s,
# shapes 293 against 307 s): running at once adds no work. The cores were shared with other jobs (load
# average 11-17), which favours two processes (they get a larger share); on an idle machine the gain is
# likely smaller, as a phase alone keeps both cores busy during its steps.
CPU_MEASURED_RATIOS = {"tiny FLUX": 0.61, "shapes model": 0.67}
CPU_PARALLEL_FASTER = all(ratio < 1.0 for ratio in CPU_MEASURED_RATIOS.values())
CPU_MEASURED = "parallel / sequential wall " + ", ".join(f"{r:.2f} ({m})" for m, r in CPU_MEASURED_RATIOS.items())


class PhaseMode(BaseModel):
    """How the phases run: at once or in turn, why, and which GPUs each one sees."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    parallel: bool
    reason: str
    gpus: dict[PhaseName, str] | None = None  # CUDA_VISIBLE_DEVICES per phase; None: what glance sees

    def describe(self) -> str:
        """The plan line `glance train` and --dry-run print."""
        return f"phases: {'both at once' if self.parallel else 'one after the other'} ({self.reason})"


def choose_mode(
    choice: PhasesChoice,
    *,
    cuda: bool,
    num_processes: int,
    gpu_ids: list[str] | None,
    memory: TrainingPlan,
    shared_memory: Callable[[], TrainingPlan],
    cpu_cores: int | None = None,
    ram_fits_twice: Callable[[], bool] = lambda: True,
) -> tuple[PhaseMode, TrainingPlan]:
    """The mode, and the memory plan each phase trains with (the plan for two on one card, when they share it).

    `gpu_ids`: the visible GPUs (None: unknown); `shared_memory()` plans for two phases on one card and
    raises GlanceError when none fits. A forced parallel that cannot fit raises GlanceError.
    `ram_fits_twice()`: on the CPU, whether the machine's memory holds two phases' weights.
    """
    if choice == "sequential":
        return PhaseMode(parallel=False, reason="--phases sequential"), memory
    if not cuda:
        cores = cpu_cores if cpu_cores is not None else os.cpu_count() or 1
        return _cpu_mode(choice, cores, ram_fits_twice), memory
    if gpu_ids is not None and len(gpu_ids) >= 2 * num_processes:
        sets = {p: ",".join(gpu_ids[i * num_processes : (i + 1) * num_processes]) for i, p in enumerate(PHASES)}
        each = "one GPU" if num_processes == 1 else f"{num_processes} GPUs"
        return PhaseMode(parallel=True, reason=f"{len(gpu_ids)} GPUs: {each} per phase", gpus=sets), memory
    if memory.gpu is None:  # nothing to compare two phases with
        if choice == "parallel":
            return PhaseMode(parallel=True, reason="--phases parallel; GPU memory unknown: both share the GPU"), memory
        unknown = "GPU memory unknown: no nvidia-smi; --gpu-memory GB plans for a card"
        return PhaseMode(parallel=False, reason=unknown), memory
    card = f"{memory.gpu.memory_gib:.1f} GiB"
    try:
        shared = shared_memory()
    except GlanceError as exc:
        if choice == "parallel":
            raise GlanceError(f"--phases parallel: {exc}") from None
        return PhaseMode(parallel=False, reason=f"two phases do not fit {card} at once"), memory
    twice = f"2 x {shared.estimate_gib:.1f} GiB"
    if choice == "parallel":
        changed = "" if shared.same_settings(memory) else f", with {shared.label()} instead of {memory.label()}"
        return PhaseMode(parallel=True, reason=f"--phases parallel: {twice} on {card}{changed}"), shared
    if not shared.fits:
        return PhaseMode(parallel=False, reason=f"two phases do not fit {card} at once"), memory
    if not shared.same_settings(memory):
        reason = (
            f"at once both would need {shared.label()} ({twice}) instead of {memory.label()}, "
            "slower steps; --phases parallel takes that trade"
        )
        return PhaseMode(parallel=False, reason=reason), memory
    return PhaseMode(parallel=True, reason=f"{twice} fits {card}: the start-ups overlap"), shared


def _cpu_mode(choice: PhasesChoice, cores: int, ram_fits_twice: Callable[[], bool]) -> PhaseMode:
    if choice == "parallel":
        return PhaseMode(parallel=True, reason="--phases parallel, on the CPU")
    if cores < 2:
        return PhaseMode(parallel=False, reason="one CPU core")
    if CPU_PARALLEL_FASTER and not ram_fits_twice():
        return PhaseMode(parallel=False, reason="on the CPU: two fp32 copies of the model need over 80 % of RAM")
    return PhaseMode(parallel=CPU_PARALLEL_FASTER, reason=f"on the CPU: measured {CPU_MEASURED} on 2 cores")


def ram_fits_twice(weights_bytes: int) -> bool:
    """Two phases' weights (`weights_bytes` each) within 80 % of this machine's memory; True when it cannot tell."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return True
    return 2 * weights_bytes <= 0.8 * ram
