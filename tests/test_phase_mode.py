"""`glance train --phases`: both phases at once where they fit and are faster (glance/phase_mode.py)."""

import pytest

from glance.families import GlanceError
from glance.memory.plans import oom_advice, plan_training
from glance.memory.sizes import KNOWN_SIZES
from glance.phase_mode import choose_mode

FLUX = KNOWN_SIZES["black-forest-labs/FLUX.1-dev"]


def choose(choice: str, card: float | None, *, gpu_ids=None, num_processes: int = 1, **pinned):
    def plan(phases_per_gpu: int):
        return plan_training(FLUX, family="flux", resolution=1024, rank=16, cuda=True, gpu_memory=card,
                             phases_per_gpu=phases_per_gpu, **pinned)  # fmt: skip

    return choose_mode(
        choice,
        cuda=True,
        num_processes=num_processes,
        gpu_ids=gpu_ids,
        memory=plan(1),
        shared_memory=lambda: plan(2),
    )


def test_one_card_that_holds_the_plan_twice_runs_both_at_once():
    mode, memory = choose("auto", 139, gpu_ids=["0"])
    assert mode.parallel and mode.gpus is None  # both see the one GPU
    assert (memory.quantize, memory.gradient_checkpointing) == ("none", False)  # the plan of one alone
    assert 2 * memory.estimate_gib + 2 <= 0.95 * 139
    twice = f"2 x {memory.estimate_gib:.1f} GiB"
    assert mode.describe() == f"phases: both at once ({twice} fits 139.0 GiB: the start-ups overlap)"
    assert "x 2 phases at once of 139.0 GiB" in memory.describe()


def test_auto_does_not_slow_the_steps_down_to_fit_two():
    # FLUX.1-dev on 80 GB: bf16 without checkpointing fits once; two at once would need checkpointing.
    mode, memory = choose("auto", 80, gpu_ids=["0"])
    assert not mode.parallel and not memory.gradient_checkpointing
    assert "would need bf16, gradient checkpointing (2 x 26.6 GiB)" in mode.reason
    assert "--phases parallel" in mode.reason
    # Forced, both run at once with the plan that fits twice, and the line says what changed.
    mode, memory = choose("parallel", 80, gpu_ids=["0"])
    assert mode.parallel and memory.gradient_checkpointing and memory.phases_per_gpu == 2
    assert "instead of bf16, no gradient checkpointing" in mode.reason


def test_forced_parallel_that_cannot_fit_is_one_error_and_auto_falls_back():
    mode, memory = choose("auto", 16, gpu_ids=["0"])
    assert not mode.parallel and "two phases do not fit 16.0 GiB at once" in mode.reason
    with pytest.raises(GlanceError, match=r"^--phases parallel: no training plan fits 2 phases at once on 16\.0 GiB"):
        choose("parallel", 16, gpu_ids=["0"])


def test_two_gpus_give_each_phase_its_own():
    mode, memory = choose("auto", 80, gpu_ids=["0", "1"])
    assert mode.parallel and mode.gpus == {"slow": "0", "fast": "1"}
    assert memory.phases_per_gpu == 1 and not memory.gradient_checkpointing  # nothing shared: the plan of one
    mode, _ = choose("auto", 80, gpu_ids=["0", "1", "2"], num_processes=2)  # three GPUs are not two sets of two
    assert not mode.parallel


def test_unknown_gpu_memory_runs_one_after_the_other_unless_forced():
    mode, _ = choose("auto", None)
    assert not mode.parallel and "no nvidia-smi" in mode.reason
    mode, _ = choose("parallel", None)
    assert mode.parallel and mode.gpus is None


def test_sequential_is_always_sequential():
    mode, memory = choose("sequential", 139, gpu_ids=["0", "1"])
    assert not mode.parallel and mode.reason == "--phases sequential" and memory.phases_per_gpu == 1


@pytest.mark.parametrize("faster", [True, False])
def test_cpu_auto_follows_the_measurement(monkeypatch, faster):
    import glance.phase_mode

    monkeypatch.setattr(glance.phase_mode, "CPU_PARALLEL_FASTER", faster)
    cpu = plan_training(FLUX, family="flux", resolution=64, rank=4, cuda=False)
    kwargs = dict(cuda=False, num_processes=1, gpu_ids=None, memory=cpu, shared_memory=lambda: cpu)
    mode, memory = choose_mode("auto", cpu_cores=2, **kwargs)
    assert mode.parallel is faster and "measured" in mode.reason and memory is cpu
    assert not choose_mode("auto", cpu_cores=1, **kwargs)[0].parallel
    assert choose_mode("parallel", cpu_cores=1, **kwargs)[0].parallel
    if faster:  # two copies of a model that fill the RAM: one after the other
        mode, _ = choose_mode("auto", cpu_cores=2, ram_fits_twice=lambda: False, **kwargs)
        assert not mode.parallel and "RAM" in mode.reason


def test_ram_check():
    from glance.phase_mode import ram_fits_twice

    assert ram_fits_twice(10_000_000) and not ram_fits_twice(10**15)


def test_out_of_memory_with_two_at_once_advises_one_at_a_time():
    _, memory = choose("parallel", 80, gpu_ids=["0"])
    advice = oom_advice("torch.OutOfMemoryError: CUDA out of memory.", memory)
    assert advice.startswith("the GPU ran out of memory with both phases at once") and advice.endswith(
        "try --phases sequential"
    )
