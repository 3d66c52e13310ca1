"""A step-time ratio's interval from rounds: each round's point over the same round's reference, the variance pooled
over every ratio of the node. The report, the terminal summary and racing (sweep/results/racing.py) all use it.

Why paired: on the VMs this runs on the machine drifts (the control point spread 1.6-1.8x over a 15-minute sweep) and
neighbouring trials share the drift (residuals of neighbouring trials correlate 0.48-0.58, ten trials apart
~0.1). A sweep measures every point once per round, in a shuffled order, so a point and its reference meet in each
round within tens of seconds: the difference of their log step times in one round,

    d_r = log t(point, r) - log t(reference, r),

cancels the drift they share, and the rounds' d_r are independent draws (each round shuffles its order anew). The
ratio is exp(mean d_r) (the geometric mean of the per-round ratios) and its interval Student's t over the rounds:

    exp(mean d ± t(1 - α/2, df) · sqrt(s² / n)),

n the rounds both sides were measured in. s² is the variance of d_r pooled over every ratio of the node (one-way
pooling: Σ_ratios Σ_r (d_r - mean_ratio)² / Σ_ratios (n_ratio - 1), df the denominator; a trial's level shifts by
about as much whatever the config, and pooling gives the variance tens of degrees of freedom instead of a point's 1-4),
never below the ratio's own (a noisier ratio keeps its own variance; the degrees of freedom stay the pool's, since an
own variance from 2-3 rounds would make Student's t 4-13 and every early look undecided).

On the two 15-minute quick runs of 2026-12-07 (benchmarks/README.md) the pooled paired variance halved the median
95% half-width of the unpaired per-point intervals. Where rounds cannot be paired (rows without `repeat`, a sweep run
before it existed, a reference with no round in common) the report keeps its hierarchical bootstrap
(sweep/results/stats.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as distributions

Trials = Sequence[tuple[int, float]]  # (round, log median step time) of one point's trials


@dataclass(frozen=True)
class Pooled:
    """The variance of one round's log ratio, pooled over the ratios of a node, and its degrees of freedom."""

    variance: float
    df: int


def differences(point: Trials, reference: Trials, before: int | None = None) -> list[float]:
    """d_r for every round both sides were measured in (rounds < `before` only, if given). A side with two trials in
    one round (a config measured by two studies) gives that round the mean of its trials."""

    def by_round(trials: Trials) -> dict[int, float]:
        grouped: dict[int, list[float]] = {}
        for r, value in trials:
            if before is None or r < before:
                grouped.setdefault(r, []).append(value)
        return {r: sum(v) / len(v) for r, v in grouped.items()}

    ours, theirs = by_round(point), by_round(reference)
    return [ours[r] - theirs[r] for r in sorted(ours) if r in theirs]


def pooled_variance(groups: Iterable[Sequence[float]]) -> Pooled | None:
    """One-way pooled variance of the groups (each: one ratio's d_r); None without a group of two."""
    groups = [g for g in groups if len(g) >= 2]
    df = sum(len(g) - 1 for g in groups)
    if df == 0:
        return None
    squares = sum(float(np.sum((np.asarray(g) - np.mean(g)) ** 2)) for g in groups)
    return Pooled(squares / df, df)


def interval(diffs: Sequence[float], pooled: Pooled | None, alpha: float) -> tuple[float, float | None, float | None]:
    """(ratio, low, high) at level 1 - alpha from one ratio's d_r; low and high None where neither its own nor the
    pooled variance can be read."""
    d = np.asarray(diffs, dtype=float)
    ratio = math.exp(float(d.mean()))
    own = float(d.var(ddof=1)) if len(d) >= 2 else None
    if pooled is not None:  # the pool holds this ratio's rounds too; a noisier ratio keeps its own variance
        variance, df = max(pooled.variance, own or 0.0), pooled.df
    elif own is not None:
        variance, df = own, len(d) - 1
    else:
        return ratio, None, None
    if variance <= 0:
        return ratio, ratio, ratio
    half = float(distributions.t.ppf(1 - alpha / 2, df)) * math.sqrt(variance / len(d))
    return ratio, ratio * math.exp(-half), ratio * math.exp(half)


def node_pool(ratios: Iterable[tuple[Trials, Trials]], before: int | None = None) -> Pooled | None:
    """The pooled variance of d_r over a node's ratios, each (point's trials, reference's trials)."""
    return pooled_variance(differences(p, q, before) for p, q in ratios)
