"""`glance eval`'s statistics: means with 95 % bootstrap intervals, paired comparisons, and the verdict line.

Everything here works on plain lists of per-image scores (no images, no models), so it is tested
without rendering. Means get scipy's bootstrap (percentile intervals, 2000 resamples) with a fixed
seed: the same scores give the same intervals on every run. The share of images where one column is
closer to the reference than another gets the Wilson score interval (scipy), honest at small n.

Which score means what is decided once, here: closeness to the reference (the verdict rests on it),
prompt adherence, and the pull toward the pair's training image, each the first of its list that
the scorers produced.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict

BOOTSTRAP_SEED = 0
RESAMPLES = 2000
CONFIDENCE = 0.95
# The first present of each list is the measure of its kind (higher is closer / more adherent / more pulled).
CLOSENESS = ("dino", "clip_image", "ssim")
ADHERENCE = ("clip_score", "judge_pass")
PULL = ("dino_pull", "clip_pull", "judge_pull")
# How a score is shown: as a percentage (shares of images) or as a number with this many decimals.
PERCENT_SCORES = {"judge_pass", "judge_agree", "judge_pull", "pull_place", "pull_colour", "pull_shape"}


class Interval(BaseModel):
    """A mean over `n` images and its 95 % bootstrap interval."""

    model_config = ConfigDict(frozen=True)

    mean: float
    low: float
    high: float
    n: int

    def show(self, score: str, signed: bool = False) -> str:
        return f"{_fmt(self.mean, score, signed)} ({_fmt(self.low, score, signed)} to {_fmt(self.high, score, signed)})"


def mean_interval(values: list[float], *, seed: int = BOOTSTRAP_SEED) -> Interval | None:
    """The mean of `values` (None entries skipped) with its 95 % percentile-bootstrap interval."""
    import numpy as np

    data = np.asarray([v for v in values if v is not None and not _nan(v)], dtype=np.float64)
    if data.size == 0:
        return None
    mean = float(data.mean())
    if data.size < 2 or float(data.min()) == float(data.max()):
        return Interval(mean=mean, low=mean, high=mean, n=int(data.size))  # nothing to resample
    from scipy.stats import bootstrap

    result = bootstrap(
        (data,),
        np.mean,
        n_resamples=RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    return Interval(mean=mean, low=float(low), high=float(high), n=int(data.size))


def share_interval(outcomes: list[float | None]) -> Interval | None:
    """The share of 1s among `outcomes` (0.5: a tie, counted half) with its 95 % Wilson score interval (scipy).

    Wilson's, not the bootstrap's: with few images all on one side the bootstrap's interval shrinks to
    a point (4 of 4 would read 100-100 %); Wilson's stays honest (51-100 %).
    """
    data = [v for v in outcomes if v is not None]
    if not data:
        return None
    from scipy.stats import binomtest

    share = sum(data) / len(data)
    ci = binomtest(round(sum(data)), len(data)).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return Interval(mean=share, low=min(share, float(ci.low)), high=max(share, float(ci.high)), n=len(data))


class Comparison(BaseModel):
    """One column against another on the same prompts and seeds (glance-10 vs base-10, vs schedule-10)."""

    column: str
    against: str
    closeness: str  # the score closeness is measured by
    closer: Interval | None  # share of images where `column` is closer to the reference (ties half; Wilson interval)
    adherence: str | None = None
    adherence_diff: Interval | None = None  # mean paired difference column - against
    pull: str | None = None
    pull_diff: Interval | None = None


def compare(column: str, against: str, scores: list[dict], other: list[dict], *, pull_suffix: str = "") -> Comparison:
    """Paired per image: `scores[i]` and `other[i]` are the same prompt and seed in the two columns.

    `other`'s pull toward `column`'s training image is under the pull's key + `pull_suffix` (with
    several pairs the base columns carry one pull per pair); `column`'s own is under the plain key.
    """
    closeness = first_present(CLOSENESS, scores)
    adherence = first_present(ADHERENCE, scores)
    pull = first_present(PULL, scores)
    closer = None
    if closeness is not None:
        wins = [_win(a.get(closeness), b.get(closeness)) for a, b in zip(scores, other, strict=True)]
        closer = share_interval(wins)
    result = Comparison(column=column, against=against, closeness=closeness or "", closer=closer)
    if adherence is not None:
        result.adherence = adherence
        result.adherence_diff = mean_interval(_diffs(scores, other, adherence, adherence))
    if pull is not None:
        result.pull = pull
        result.pull_diff = mean_interval(_diffs(scores, other, pull, pull + pull_suffix))
    return result


def first_present(names: tuple[str, ...], scores: list[dict]) -> str | None:
    return next((name for name in names if any(s.get(name) is not None for s in scores)), None)


def verdict_line(name: str, steps: int, reference_steps: int, base: Comparison, schedule: Comparison | None) -> str:
    """ONE plain line on a glance column, resting on closeness to the reference.

    "beats" / "is worse than" only when the share's interval lies wholly above / below one half;
    else "no measurable difference". Adherence and pull stand beside it, and a column that gains
    adherence while moving away from the reference and toward its training image is called out.
    """
    share = base.closer
    if share is None:
        return f"{name}: no closeness score; no verdict"
    if share.low > 0.5:
        head = f"{name} beats the base at {steps} steps"
    elif share.high < 0.5:
        head = f"{name} is worse than the base at {steps} steps"
    else:
        head = f"{name}: no measurable difference from the base at {steps} steps"
    parts = [f"closer to {reference_steps} steps on {share_text(share)} of {share.n} images ({base.closeness})"]
    if base.adherence_diff is not None:
        parts.append(f"{_label(base.adherence)} {base.adherence_diff.show(base.adherence, signed=True)}")
    if base.pull_diff is not None:
        parts.append(f"pull toward its training image {base.pull_diff.show(base.pull, signed=True)}")
    line = f"{head}: " + ", ".join(parts)
    if schedule is not None and schedule.closer is not None:
        s = schedule.closer
        line += f"; against the base on its sigmas (no LoRA): closer on {share_text(s)}"
    gains = base.adherence_diff is not None and base.adherence_diff.low > 0
    pulled = base.pull_diff is not None and base.pull_diff.low > 0
    if gains and share.high < 0.5 and pulled:
        line += (
            f"; it gains {_label(base.adherence)} by moving away from {reference_steps} steps and toward its "
            "training image: the pull, not a faster base model"
        )
    elif pulled:
        line += "; its images are pulled toward its training image"
    return line


def _win(a, b) -> float | None:
    if a is None or b is None or _nan(a) or _nan(b):
        return None
    return 1.0 if a > b else 0.5 if a == b else 0.0


def _diffs(scores: list[dict], other: list[dict], key: str, other_key: str) -> list[float | None]:
    out = []
    for a, b in zip(scores, other, strict=True):
        x, y = a.get(key), b.get(other_key)
        out.append(None if x is None or y is None else x - y)
    return out


def _nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def share_text(share: Interval) -> str:
    """71 % (62-79 %)"""
    return f"{share.mean * 100:.0f} % ({share.low * 100:.0f}-{share.high * 100:.0f} %)"


def _label(score: str | None) -> str:
    return {"clip_score": "CLIP score", "judge_pass": "judge pass"}.get(score or "", score or "")


def _fmt(value: float, score: str | None, signed: bool = False) -> str:
    if score in PERCENT_SCORES:
        text = f"{value * 100:+.0f} %" if signed else f"{value * 100:.0f} %"
    elif score == "clip_score":
        text = f"{value:+.2f}" if signed else f"{value:.2f}"
    else:
        text = f"{value:+.3f}" if signed else f"{value:.3f}"
    return text
