"""Default timestep lists come from the model's own scheduler; user lists are validated."""

import numpy as np
import pytest

from glance.families import FAMILIES, GlanceError, ModelSchedule, SchedulerSettings, model_schedule
from glance.schedule import (
    BASE_STEPS,
    TimestepLists,
    base_schedule,
    default_lists,
    parse_list,
    to_sigmas,
    to_simpletuner,
)

# Published lists (../shared/FACTS.md): the seed's Qwen-Image list and the Glance authors' FLUX list.
QWEN_1024 = ((1000, 979.1915, 957.5157, 934.9171, 911.3354), (886.7053, 745.0728, 562.9505, 320.0802, 20.0))
FLUX_1024 = ((1000, 986.9786, 973.2042, 958.6094, 943.1188), (926.6473, 825.7017, 677.9868, 441.1997, 60.5503))


@pytest.mark.parametrize(("family", "published"), [("qwen_image", QWEN_1024), ("flux", FLUX_1024)])
def test_published_lists_are_reproduced(family, published):
    fam = FAMILIES[family]
    lists = default_lists(fam, model_schedule(fam.hub_ids[0], fam), 1024)
    assert lists.slow == pytest.approx(published[0], abs=5e-5)
    assert lists.fast == pytest.approx(published[1], abs=5e-5)
    assert [f"{t:.4f}" for t in lists.slow + lists.fast] == [f"{t:.4f}" for t in published[0] + published[1]]


def _diffusers_sigmas(family, settings: SchedulerSettings, vae_scale: int, size: int) -> list[float]:
    """What the family's diffusers pipeline hands its scheduler, replayed on diffusers itself."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, **settings.__dict__)
    kwargs = {}
    seq_len = family.image_seq_len(size, size, vae_scale)
    if settings.use_dynamic_shifting and family.default_sigmas == "empirical_mu":  # FLUX.2: size and step count
        from diffusers.pipelines.flux2.pipeline_flux2 import compute_empirical_mu

        kwargs["mu"] = compute_empirical_mu(image_seq_len=seq_len, num_steps=BASE_STEPS)
    elif settings.use_dynamic_shifting:
        m = (settings.max_shift - settings.base_shift) / (settings.max_image_seq_len - settings.base_image_seq_len)
        kwargs["mu"] = seq_len * m + settings.base_shift - m * settings.base_image_seq_len
    if family.default_sigmas in ("linspace", "empirical_mu"):
        kwargs["sigmas"] = np.linspace(1.0, 1 / BASE_STEPS, BASE_STEPS)
        scheduler.set_timesteps(**kwargs)
    else:
        scheduler.set_timesteps(BASE_STEPS, **kwargs)
    return scheduler.sigmas[:-1].tolist()


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("size", [512, 1024, 1536])
def test_base_schedule_matches_diffusers(family, size):
    fam = FAMILIES[family]
    ours = base_schedule(fam, ModelSchedule(fam.scheduler, 8), size, size)
    theirs = _diffusers_sigmas(fam, fam.scheduler, 8, size)
    assert ours == pytest.approx(theirs, abs=1e-7)


def test_resolution_moves_dynamic_schedules_only():
    flux, sd3 = FAMILIES["flux"], FAMILIES["sd3"]
    flux_512 = default_lists(flux, model_schedule(flux.hub_ids[0], flux), 512)
    flux_1024 = default_lists(flux, model_schedule(flux.hub_ids[0], flux), 1024)
    assert flux_512.slow[1] < flux_1024.slow[1]  # fewer tokens -> less shift
    sd3_512 = default_lists(sd3, model_schedule(sd3.hub_ids[0], sd3), 512)
    assert sd3_512 == default_lists(sd3, model_schedule(sd3.hub_ids[0], sd3), 1024)


def test_sigmas_are_simpletuners_float32_reading():
    lists = TimestepLists(*QWEN_1024)
    assert lists.sigmas[0] == 1.0
    assert lists.sigmas[1] == float(np.float32(np.float32(979.1915) / np.float32(1000.0)))
    assert lists.sigmas[-1] == float(np.float32(0.02))
    sig = TimestepLists((1.0, 0.9), (0.5, 0.1))
    assert sig.unit == "sigmas" and sig.sigmas == [1.0, float(np.float32(0.9)), 0.5, float(np.float32(0.1))]
    assert to_sigmas([500.0]) == [0.5]


def test_simpletuner_string_round_trips():
    values = (1000.0, 979.1915, 20.0)
    text = to_simpletuner(values)
    assert text == "1000.0,979.1915,20.0"
    assert parse_list(text, "x") == values


@pytest.mark.parametrize(
    ("slow", "fast", "message"),
    [
        ("", "500", "slow is empty"),
        ("1000,abc", "500", "'abc' is not a number"),
        ("1000,,900", "500", "empty entry"),
        ("1000,nan", "500", "not a finite number"),
        ("1000,900", "0.5,0.2", "one scale"),
        ("1200,900", "500", "out of range"),
        ("1000,900", "500,0", "out of range"),
        ("1.5", "0.5", "one scale"),
        ("1000,900,950", "500", "strictly decreasing"),
        ("1000,900", "500,500", "strictly decreasing"),
        ("1000,900", "950,100", "above every fast"),
        ("0.9,0.8", "0.8,0.1", "above every fast"),
    ],
)
def test_bad_lists_have_their_own_message(slow, fast, message):
    with pytest.raises(GlanceError, match=message):
        TimestepLists(parse_list(slow, "slow"), parse_list(fast, "fast"))


def test_local_model_schedule_is_read_from_its_folder(tmp_path):
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "scheduler_config.json").write_text('{"shift": 2.0, "use_dynamic_shifting": false}')
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text('{"block_out_channels": [4]}')
    schedule = model_schedule(str(tmp_path), FAMILIES["flux"])
    assert schedule.scheduler.shift == 2.0 and not schedule.scheduler.use_dynamic_shifting
    assert schedule.vae_scale_factor == 1
