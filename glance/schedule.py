"""Timestep lists: derive them from a model's scheduler, validate them, turn them into sigmas.

The Glance authors took their lists from the model's own 50-step schedule at the training
resolution: indices 0,2,4,6,8 for the slow LoRA and 10,20,30,40,49 for the fast one. This module
reproduces that arithmetic (the same formulas as diffusers' FlowMatchEulerDiscreteScheduler) in
plain Python, so `glance configs` and `glance schedule` need no torch.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from glance.families import Family, GlanceError, ModelSchedule

BASE_STEPS = 50
SLOW_INDICES = (0, 2, 4, 6, 8)
FAST_INDICES = (10, 20, 30, 40, 49)
NUM_TRAIN_TIMESTEPS = 1000


def _f32(x: float) -> float:
    """Round to float32, the precision SimpleTuner and diffusers hold sigmas in."""
    return struct.unpack("f", struct.pack("f", x))[0]


def _time_shift(settings, mu: float, t: float) -> float:
    x = _f32(_f32(1 / t) - 1)
    scale = _f32(math.exp(mu)) if settings.time_shift_type == "exponential" else _f32(mu)
    return _f32(scale / _f32(scale + x))


def _static_shift(shift: float, s: float) -> float:
    return shift * s / (1 + (shift - 1) * s)


def _linspace(steps: int) -> list[float]:
    """The pipelines' np.linspace(1, 1/N, N), cast to float32."""
    return [_f32(1.0 - i * (1.0 - 1.0 / steps) / (steps - 1)) for i in range(steps)]


def _resolution_mu(settings, seq_len: int) -> float:
    """diffusers' calculate_shift: mu linear in the packed token count."""
    slope = (settings.max_shift - settings.base_shift) / (settings.max_image_seq_len - settings.base_image_seq_len)
    return seq_len * slope + settings.base_shift - slope * settings.base_image_seq_len


def empirical_mu(seq_len: int, steps: int) -> float:
    """FLUX.2's mu (diffusers pipeline_flux2.py, compute_empirical_mu): fitted on 10 and 200 steps, linear in both.

    Above 4300 tokens it depends on the size alone; below, fewer steps shift more (mu falls as `steps` grows).
    """
    a1, b1 = 8.73809524e-05, 1.89833333
    a2, b2 = 0.00016927, 0.45666666
    m_200 = a2 * seq_len + b2
    if seq_len > 4300:
        return float(m_200)
    m_10 = a1 * seq_len + b1
    a = (m_200 - m_10) / 190.0
    return float(a * steps + (m_200 - 200.0 * a))


def default_grid(family: Family, model: ModelSchedule, seq_len: int, steps: int) -> tuple[list[float], float | None]:
    """The unshifted sigmas the family's pipeline starts from, and the mu it shifts them with (None: static shift).

    One branch per `Family.default_sigmas` mode: a family whose pipeline derives its schedule
    another way adds its mode here.
    """
    settings = model.scheduler
    mu = _resolution_mu(settings, seq_len) if settings.use_dynamic_shifting else None
    if family.default_sigmas == "linspace":
        return _linspace(steps), mu
    if family.default_sigmas == "scheduler":  # the scheduler's own spacing between its float32 sigma_max and sigma_min
        sigma_min = 1.0 / NUM_TRAIN_TIMESTEPS
        if not settings.use_dynamic_shifting:
            sigma_min = _f32(_static_shift(settings.shift, _f32(sigma_min)))
        return [1.0 - i * (1.0 - sigma_min) / (steps - 1) for i in range(steps)], mu
    if family.default_sigmas == "empirical_mu":  # FLUX.2: linspace, with a mu from the size AND the step count
        return _linspace(steps), (empirical_mu(seq_len, steps) if settings.use_dynamic_shifting else None)
    raise GlanceError(f"the {family.name} family has an unknown default_sigmas mode {family.default_sigmas!r}")


def base_schedule(
    family: Family, model: ModelSchedule, width: int, height: int, steps: int = BASE_STEPS
) -> list[float]:
    """The sigmas (without the final 0) the family's pipeline samples at `steps` steps.

    Rounded to float32 where diffusers computes in float32, so the 4-decimal timesteps come out
    exactly as diffusers prints them (and as the published lists read).
    """
    settings = model.scheduler
    seq_len = family.image_seq_len(width, height, model.vae_scale_factor)
    sigmas, mu = default_grid(family, model, seq_len, steps)
    if mu is not None:
        sigmas = [_time_shift(settings, mu, _f32(s)) for s in sigmas]
    else:
        sigmas = [_f32(_static_shift(settings.shift, s)) for s in sigmas]
    if settings.shift_terminal:
        one_minus = [_f32(1 - s) for s in sigmas]
        scale = _f32(one_minus[-1] / (1 - settings.shift_terminal))
        sigmas = [_f32(1 - _f32(z / scale)) for z in one_minus]
    return sigmas


@dataclass(frozen=True)
class TimestepLists:
    """The slow and fast lists exactly as SimpleTuner receives them.

    Values above 1 are timesteps (0-1000), otherwise sigmas (0-1): SimpleTuner decides per list
    by its maximum, so both lists must be on one scale.
    """

    slow: tuple[float, ...]
    fast: tuple[float, ...]

    def __post_init__(self) -> None:
        validate_lists(self.slow, self.fast)

    @property
    def unit(self) -> str:
        return "timesteps" if max(self.slow) > 1 else "sigmas"

    @property
    def slow_sigmas(self) -> list[float]:
        return to_sigmas(self.slow)

    @property
    def fast_sigmas(self) -> list[float]:
        return to_sigmas(self.fast)

    @property
    def sigmas(self) -> list[float]:
        """Every sampling step's sigma, slow then fast; the step index where `fast` starts is len(slow)."""
        return self.slow_sigmas + self.fast_sigmas


def to_sigmas(values: tuple[float, ...] | list[float]) -> list[float]:
    """SimpleTuner's reading of a list (helpers/models/common.py, sample_flow_sigmas), in float32."""
    if max(values) <= 1.0:
        return [_f32(min(max(v, 0.0), 1.0)) for v in values]
    return [_f32(_f32(min(max(v, 0.0), 1000.0)) / 1000.0) for v in values]


def to_simpletuner(values: tuple[float, ...] | list[float]) -> str:
    """The comma string `flow_custom_timesteps` takes (a JSON list would be read as repeated flags)."""
    return ",".join(repr(float(v)) for v in values)


def default_lists(family: Family, model: ModelSchedule, resolution: int) -> TimestepLists:
    """The Glance authors' choice of steps, from this model's 50-step schedule at `resolution`."""
    sigmas = base_schedule(family, model, resolution, resolution)
    pick = lambda indices: tuple(round(_f32(sigmas[i] * NUM_TRAIN_TIMESTEPS), 4) for i in indices)  # noqa: E731
    return TimestepLists(slow=pick(SLOW_INDICES), fast=pick(FAST_INDICES))


def parse_list(text: str, label: str) -> tuple[float, ...]:
    """'1000, 979.19, ...' -> floats; `label` names the list in error messages."""
    items = [item.strip() for item in text.replace(";", ",").split(",")]
    if not any(items):
        raise GlanceError(f"{label} is empty: give a comma-separated list such as 1000,979.19,957.52")
    values = []
    for item in items:
        if not item:
            raise GlanceError(f"{label} has an empty entry in {text!r}")
        try:
            value = float(item)
        except ValueError:
            raise GlanceError(f"{label}: {item!r} is not a number") from None
        if not math.isfinite(value):
            raise GlanceError(f"{label}: {item!r} is not a finite number")
        values.append(value)
    return tuple(values)


def parse_lists(slow: str | None, fast: str | None) -> TimestepLists | None:
    """The --slow-timesteps / --fast-timesteps pair: both parsed and validated, or None when neither is given."""
    if slow is None and fast is None:
        return None
    if slow is None or fast is None:
        raise GlanceError("give both --slow-timesteps and --fast-timesteps, or neither")
    return TimestepLists(parse_list(slow, "--slow-timesteps"), parse_list(fast, "--fast-timesteps"))


def validate_lists(slow: tuple[float, ...], fast: tuple[float, ...]) -> None:
    """Refuse lists SimpleTuner would misread or that cannot be chained; one message per fault."""
    for label, values in (("slow timesteps", slow), ("fast timesteps", fast)):
        if not values:
            raise GlanceError(f"{label} is empty")
    as_timesteps = {label: max(values) > 1 for label, values in (("slow", slow), ("fast", fast))}
    if as_timesteps["slow"] != as_timesteps["fast"]:
        t, s = ("slow", "fast") if as_timesteps["slow"] else ("fast", "slow")
        raise GlanceError(
            f"the {t} list reads as timesteps (0-1000) but the {s} list as sigmas (all <= 1); "
            "give both lists on one scale"
        )
    top = 1000.0 if as_timesteps["slow"] else 1.0
    for label, values in (("slow timesteps", slow), ("fast timesteps", fast)):
        for value in values:
            if not 0 < value <= top:
                raise GlanceError(f"{label}: {value:g} is out of range (0, {top:g}]")
        for before, after in zip(values, values[1:], strict=False):
            if after >= before:
                raise GlanceError(f"{label} must be strictly decreasing: {before:g} is followed by {after:g}")
    if min(slow) <= max(fast):
        raise GlanceError(
            f"every slow timestep must lie above every fast one: slow ends at {min(slow):g}, "
            f"fast starts at {max(fast):g}"
        )


def switch_step(lists: TimestepLists) -> int:
    """The 0-based sampling step at which the fast LoRA takes over."""
    return len(lists.slow)
