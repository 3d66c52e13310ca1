"""How many steps a trial should measure: the count that narrows a point's interval most per second of wall time,
from the node's own variance components (Kalibera & Jones, "Rigorous benchmarking in reasonable time", ISMM 2013).

A point measured in r trials of n steps each has a mean log step time with variance

    Var = σ_b² / r + (π/2) σ_w² / (r n)

σ_b²: the between-trial variance (whole trials shift level: another process, another placement in memory);
σ_w²: the per-step variance in log space, read robustly (1.4826 x the median absolute deviation: the median a trial
reports ignores its rare very slow step) and inflated by (1 + ρ) / (1 - ρ) for the lag-1 autocorrelation ρ of the
steps (neighbouring steps are not independent draws; ρ was 0.43 at the median of the quick plan's trials here); π/2: a median of n steps has that much more variance than a
mean. The r trials cost r (c_1 + n c_2) seconds: c_1 the fixed cost per trial (everything but the measured steps:
spawn, imports, model build, the first and warm-up steps, the peak, exit), c_2 one step. For a fixed wall time the
variance is smallest at

    n* = sqrt( (c_1 / c_2) · (π/2) σ_w² / σ_b² )

(the classic optimum of a two-stage design, Kalibera & Jones §4 and Cochran, Sampling Techniques, §10.6). σ_b² and
σ_w² are estimated from a node's first round and its control points (the baseline re-measured: the only point with
several trials that early); c_1 from every measured trial there; c_2 is each point's own step time. Where σ_b² is no
larger than what the steps alone explain, longer trials win and the plan's own length stays.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from sweep.results.rows import clean_row, step_times
from sweep.results.wall_time import trial_parts

MIN_STEPS = 10  # fewer and a trial's median rests on a handful of steps: its own interval is wide and skewed
MEDIAN_EFFICIENCY = math.pi / 2  # Var(median) / Var(mean) of normal draws
MAD_TO_SD = 1.4826  # a normal's standard deviation over its median absolute deviation


@dataclass(frozen=True)
class VarianceComponents:
    """One node's noise and costs, each a measured figure (log space for the variances)."""

    between: float  # σ_b²: variance of a trial's level
    within: float  # σ_w²: per-step variance, autocorrelation included
    fixed_s: float  # c_1: median fixed cost per trial
    trials: int  # measured trials it was read from
    repeated_points: int  # points with two or more trials (the between variance's source)

    def steps(self, step_s: float) -> int | None:
        """n* for a point whose step takes `step_s` (None: the between variance is not above the steps' own)."""
        if self.between <= 0 or step_s <= 0:
            return None
        return max(MIN_STEPS, round(math.sqrt(self.fixed_s / step_s * MEDIAN_EFFICIENCY * self.within / self.between)))

    def as_dict(self) -> dict:
        return asdict(self)


def variance_components(rows: Sequence[dict]) -> VarianceComponents | None:
    """The components from one node's measured rows (None where no point has two trials with their steps)."""
    measured = [r for r in (clean_row(r) for r in rows) if r["_ok"] and not r.get("shared_from")]
    measured = [r for r in measured if step_times(r) and len(step_times(r)) >= 3]
    if not measured:
        return None
    within = statistics.median(_within_variance(step_times(r)) for r in measured)
    fixed = statistics.median(sum(v for k, v in trial_parts(r).items() if k != "measured_s") for r in measured)
    groups: dict[str, list[dict]] = {}
    for r in measured:
        groups.setdefault(r["config_key"], []).append(r)
    repeated = [g for g in groups.values() if len(g) >= 2]
    if not repeated:
        return None
    squares = sum(float(np.var([math.log(r["step_time_median_s"]) for r in g]) * len(g)) for g in repeated)
    observed = squares / sum(len(g) - 1 for g in repeated)
    # what a trial's median varies by from its steps alone, over the repeated trials
    from_steps = statistics.mean(MEDIAN_EFFICIENCY * within / len(step_times(r)) for g in repeated for r in g)
    return VarianceComponents(observed - from_steps, within, fixed, len(measured), len(repeated))


def _within_variance(steps: Sequence[float]) -> float:
    """Per-step log variance as a median sees it, inflated for lag-1 autocorrelation.

    Robust: a trial's rare slow step (500 ms among 80 ms ones, a page fault or another process) moves its median by
    one rank but a variance by a factor of ten, so the spread is 1.4826 x the median absolute deviation, and ρ is read
    from the steps clipped at 3 of those (ρ clipped to [0, 0.9]: a negative ρ is noise)."""
    logs = np.log(np.asarray(steps, dtype=float))
    deviations = logs - np.median(logs)
    scale = MAD_TO_SD * float(np.median(np.abs(deviations)))
    if scale <= 0:
        return 0.0
    clipped = np.clip(deviations, -3 * scale, 3 * scale)
    centered = clipped - clipped.mean()
    denominator = float(np.dot(centered, centered))
    rho = float(np.dot(centered[:-1], centered[1:]) / denominator) if denominator > 0 else 0.0
    rho = min(max(rho, 0.0), 0.9)
    return scale**2 * (1 + rho) / (1 - rho)
