"""How sure a step time is: a point's median over its repeats with a 95% confidence interval, its ratio to the study's
reference with an interval and a verdict, and the drift of the control point.

Why a hierarchical bootstrap: on the VMs this runs on a step varies ~10% around its trial's level, but whole trials
shift level by 10-40% and the machine drifts over minutes. The steps of one trial are therefore not independent draws
of the point's time; resampling them alone gives intervals as narrow as the per-step noise allows and misses the
between-trial shift that dominates. So each resample draws the repeats (trials) with replacement and, inside each
drawn repeat, its steps (the two-level bootstrap of Davison & Hinkley 1997, §3.8; Saravanan et al. 2020, "Application
of the hierarchical bootstrap to multi-level data in neuroscience"). A point measured once can only resample its
steps: its interval ignores between-trial variation and is too narrow, which `Estimate.method` says.

Deterministic: RESAMPLES resamples from a generator seeded by SEED and the point's identity, so the same rows give the
same report, and two points never share their random draws (shared draws would make a ratio's interval too narrow).

Why not `scipy.stats.bootstrap` (https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.bootstrap.html): it
resamples the observations of each sample at one level (independently, or paired across samples), so it cannot draw
repeats and then steps inside each drawn repeat; it offers the percentile, basic and BCa intervals but not Hesterberg's
expanded percentile interval `expansion` applies; and it builds every resample, where `resampled_medians` draws a
resample's median directly. Its distributions are used where they fit: Student's t for the expansion here, the F tail
in sweep/results/fit.py.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats as distributions  # not `stats`: this module's own name

RESAMPLES = 2000  # the 2.5% tail then rests on 50 resamples: enough for a percentile that reads to two digits
# Any fixed value does: it only makes a report repeat exactly. Another value would move every interval end by its Monte
# Carlo error, so it stays the one the stored reports were written with.
SEED = 12
CONFIDENCE = 0.95
NORMAL_975 = float(distributions.norm.ppf(0.975))  # 1.959963984540054
STEPS_ONLY = "steps only: one repeat, the interval ignores between-trial variation"
NO_MEASURABLE_EFFECT = "no measurable effect"


@dataclass(frozen=True)
class Estimate:
    """A point's median step time over its repeats, with a 95% interval (None where nothing can be resampled)."""

    median_s: float
    low_s: float | None
    high_s: float | None
    repeats: int
    method: str
    # (RESAMPLES,) bootstrap medians before the small-sample expansion, which each interval applies for itself
    samples: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def steps_only(self) -> bool:
        return self.repeats == 1 and self.samples is not None

    @property
    def log_half_width(self) -> float | None:
        """Half the interval's width in log space (0.1: about ±10%), the scale the fits work on."""
        return None if self.low_s is None else 0.5 * math.log(self.high_s / self.low_s)


@dataclass(frozen=True)
class Ratio:
    """A point's median over the reference's; low/high: the 95% interval of the ratio (None without intervals)."""

    value: float
    low: float | None
    high: float | None
    steps_only: bool  # either side has one repeat: the interval ignores between-trial variation
    paired: int = (
        0  # rounds the interval paired the point with its reference in (sweep/results/paired.py); 0: bootstrap
    )

    @property
    def measurable(self) -> bool | None:
        return None if self.low is None else not self.low <= 1.0 <= self.high

    def verdict(self, above: str = "slower", below: str = "faster") -> str:
        """'no measurable effect' where the interval includes 1.0; else the direction (step time ratios: above 1 is
        slower), with the caveat when the interval saw one repeat only."""
        if self.measurable is None:
            return "no interval"
        if not self.measurable:
            return NO_MEASURABLE_EFFECT
        return (above if self.value > 1 else below) + (" (1 repeat: steps only)" if self.steps_only else "")

    def text(self) -> str:
        interval = f" ({self.low:.2f}–{self.high:.2f})" if self.low is not None else ""
        return f"{self.value:.2f}x{interval}"


def resampled_medians(steps: Sequence[float], size: int, rng: np.random.Generator, draws: int | None = None):
    """The medians of `size` bootstrap resamples of `draws` values (default: as many as there are) from `steps`.

    Exact without building the resamples: the j-th smallest of n uniforms is Beta(j, n + 1 - j), and a resample's
    j-th smallest value is the empirical quantile at that uniform (David & Nagaraja, Order Statistics, §2.1; the exact
    bootstrap of the median, Maritz & Jarrett 1978). For even n the (m+1)-th uniform is the m-th plus the rest times a
    Beta(1, n - m). O(size) instead of O(size x n): a 500-step trial costs what a 5-step one does.
    """
    ordered = np.sort(np.asarray(steps, dtype=float))
    n, m = ordered.size, (draws or ordered.size)
    k = (m + 1) // 2

    def value_at(u):
        return ordered[np.clip(np.ceil(u * n).astype(int) - 1, 0, n - 1)]

    lower = rng.beta(k, m + 1 - k, size)
    if m % 2:
        return value_at(lower)
    upper = lower + (1 - lower) * rng.beta(1, m - k, size)
    return 0.5 * (value_at(lower) + value_at(upper))


def point_estimate(repeats: Sequence[tuple[float, Sequence[float] | None]], identity: str) -> Estimate:
    """Median over repeats of each repeat's median step time, with its 95% interval.

    repeats: (the repeat's median step time, its per-step times or None for rows that predate them) per repeat;
    identity: names the point (seeds its draws).
    """
    repeats = _canonical(repeats)
    medians = np.array([median for median, _ in repeats], dtype=float)
    center = float(np.median(medians))
    rng = np.random.default_rng([SEED, zlib.crc32(identity.encode())])
    if len(repeats) == 1:
        steps = repeats[0][1]
        if steps is None or len(steps) < 2:
            return Estimate(center, None, None, 1, "no interval: one repeat without its per-step times")
        return _with_interval(center, resampled_medians(steps, RESAMPLES, rng), 1, STEPS_ONLY)
    picks = rng.integers(0, len(repeats), size=(RESAMPLES, len(repeats)))  # (resample, slot): which repeat
    inner = np.empty(picks.shape)
    for index, (median, steps) in enumerate(repeats):
        drawn = picks == index
        has_steps = steps is not None and len(steps) >= 2
        inner[drawn] = resampled_medians(steps, int(drawn.sum()), rng) if has_steps else median
    samples = np.median(inner, axis=1)
    return _with_interval(center, samples, len(repeats), f"hierarchical bootstrap over {len(repeats)} repeats")


def _canonical(repeats: Sequence[tuple[float, Sequence[float] | None]]) -> list[tuple[float, Sequence[float] | None]]:
    """The repeats in one order whatever order the store returned them in (its files are read in no fixed order), so
    the same rows always meet the same draws."""
    return sorted(repeats, key=lambda r: (r[0], tuple(r[1] or ())))


def expansion(parts: Sequence[tuple[np.ndarray, int]]) -> float:
    """How much to widen a bootstrap distribution (its log deviations from the estimate) built from few repeats.

    parts: (log deviations of one estimate's bootstrap draws, its number of repeats) per estimate that enters (one for
    a point, two for a ratio). A bootstrap over R repeats never reaches past the measured repeats, its spread is that
    of the plug-in variance (divisor R, not R - 1), and it makes no allowance for that variance being estimated from R
    values: with 3 repeats and 15% trial-level shifts the plain percentile interval covered the true median in 80% of
    200 synthetic points, with 2 repeats in 57% (30 steps of 10% noise each). Hesterberg's expanded percentile interval
    (Hesterberg 2015, The American Statistician 69(4), "What teachers should know about the bootstrap", §4.4) corrects
    both with sqrt(R/(R-1)) * t(0.975, R-1) / z(0.975); here it scales the spread, because a median's percentiles
    cannot move past the data, and a ratio combines its two variances with Welch-Satterthwaite degrees of freedom
    (Welch 1947), as a two-sample t interval would. This brought a point's coverage to 0.965 (3 repeats) and 0.98 (5)
    on such points (tests/test_stats.py). One repeat (steps only) takes no expansion: its steps are many.
    """
    variances = [(float(np.var(d)), r) for d, r in parts]
    raw = sum(v for v, _ in variances)
    corrected = [v * r / (r - 1) if r > 1 else v for v, r in variances]
    if raw <= 0:
        return 1.0
    spread_df = sum(c * c / (r - 1) for c, (_, r) in zip(corrected, variances, strict=True) if r > 1)
    # Welch-Satterthwaite by hand: scipy's (ttest_ind(equal_var=False).df) takes the samples, not bootstrap variances
    quantile = NORMAL_975 if spread_df == 0 else float(distributions.t.ppf(0.975, sum(corrected) ** 2 / spread_df))
    return math.sqrt(sum(corrected) / raw) * quantile / NORMAL_975


def _with_interval(center: float, samples: np.ndarray, repeats: int, method: str) -> Estimate:
    deviations = np.log(samples) - math.log(center)
    widened = math.log(center) + expansion([(deviations, repeats)]) * deviations
    low, high = np.exp(np.quantile(widened, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2]))
    return Estimate(center, float(low), float(high), repeats, method, samples)


def ratio_to_reference(point: Estimate, reference: Estimate) -> Ratio:
    """point / reference, its interval from the ratio of their independent bootstrap draws (each point's resamples
    come from its own trials, so pairing draw i with draw i is as good as any pairing), widened by `expansion`."""
    value = point.median_s / reference.median_s
    steps_only = point.steps_only or reference.steps_only
    if point.samples is None or reference.samples is None:
        return Ratio(value, None, None, steps_only)
    ours = np.log(point.samples) - math.log(point.median_s)
    theirs = np.log(reference.samples) - math.log(reference.median_s)
    widened = expansion([(ours, point.repeats), (theirs, reference.repeats)]) * (ours - theirs)
    low, high = value * np.exp(np.quantile(widened, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2]))
    return Ratio(value, float(low), float(high), steps_only)


# ---- drift of the control point -----------------------------------------------------------------
@dataclass(frozen=True)
class Drift:
    """How far apart the control point's repeats (the baseline re-measured through the sweep) lie."""

    spread: float  # max / min of the repeats' median step times
    low: float | None  # 95% interval of the spread, resampling each repeat's steps
    high: float | None
    p_value: float | None  # chance of a spread this large from per-step noise alone (all repeats at one level)

    @property
    def within_noise(self) -> bool | None:
        return None if self.p_value is None else self.p_value >= 1 - CONFIDENCE


def control_drift(repeats: Sequence[tuple[float, Sequence[float] | None]]) -> Drift:
    """max/min of the control's per-repeat medians, its interval, and a bootstrap test of "one level throughout".

    The test (a bootstrap test of equal levels, Efron & Tibshirani 1993, §16.4): remove each repeat's level (its log
    median) from its log steps, pool what is left (the per-step noise), and draw each repeat's median again from that
    pool with its own number of steps: the spread such draws reach is what noise alone gives. The p-value is the share
    of draws at least as spread as the measured repeats.
    """
    repeats = _canonical(repeats)
    medians = np.array([median for median, _ in repeats], dtype=float)
    spread = float(medians.max() / medians.min())
    steps = [np.asarray(s, dtype=float) for _, s in repeats if s is not None and len(s) >= 2]
    if len(steps) != len(repeats):
        return Drift(spread, None, None, None)
    rng = np.random.default_rng([SEED, zlib.crc32(b"control drift")])
    measured = np.stack([resampled_medians(s, RESAMPLES, rng) for s in steps])  # (repeat, resample)
    low, high = np.quantile(measured.max(axis=0) / measured.min(axis=0), [0.025, 0.975])
    noise = np.concatenate([np.log(s) - math.log(float(np.median(s))) for s in steps])
    null = np.stack([resampled_medians(noise, RESAMPLES, rng, draws=s.size) for s in steps])
    p_value = float(np.mean(np.exp(null.max(axis=0) - null.min(axis=0)) >= spread))
    return Drift(spread, float(low), float(high), p_value)
