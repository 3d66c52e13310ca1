"""How many steps a trial should measure: the count that narrows a point's interval most per second of wall time,
from the node's own variance components (Kalibera & Jones, "Rigorous benchmarking in reasonable time", ISMM 2013).

A point measured in r trials of n steps each has a mean log step time with variance

    Var(n) / r,   Var(n) = σ_b² + V_w(n)

σ_b²: the between-trial variance (whole trials shift level: another process, another placement in memory);
V_w(n): the variance one trial's log median gets from its own n steps. The r trials cost r (c_1 + n c_2) seconds:
c_1 the fixed cost per trial (everything but the measured steps: spawn or fork, model build, the first and warm-up
steps, the peak, exit), c_2 one step. For a fixed wall time the variance is smallest at the n that minimises

    Var(n) · (c_1 + n c_2).

Were the steps independent draws, V_w(n) = (π/2) σ_w² / n and the optimum the closed form of a two-stage design,
n* = sqrt((c_1 / c_2) · (π/2) σ_w² / σ_b²) (Kalibera & Jones §4; Cochran, Sampling Techniques, §10.6). On these VMs
they are not: disturbances come in bursts of ~0.5-1 s, and a fresh process's first steps differ from its later ones
(10-step trials read up to 189 ms where the same config's 3 s trials read 78-96 ms). So Var(n) is measured whole,
as what the first rounds' trials would have read had they stopped after n steps: each trial's median over its first
n measured steps (its warm-up already behind it), pooled over the repeats of every point (the control points, the
baseline re-measured, among them) for each candidate n. c_1 is the median over those trials, c_2 each point's own
step time. The plan's own length stays unless a shorter measured n does better. The components recorded with it:
σ_w² (per-step, 1.4826 x the median absolute deviation of the log steps, squared) and σ_b² = Var(N) - (π/2) σ_w² / N.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from sweep.results.rows import clean_row, step_times
from sweep.results.wall_time import trial_parts

CANDIDATE_STEPS = (10, 15, 20, 30, 40, 60, 80, 120, 160, 240, 320)  # fewer than 10: a median of a handful of steps
MEDIAN_EFFICIENCY = math.pi / 2  # Var(median) / Var(mean) of normal draws
MAD_TO_SD = 1.4826  # a normal's standard deviation over its median absolute deviation


@dataclass(frozen=True)
class VarianceComponents:
    """One node's noise and costs, each a measured figure (log space for the variances)."""

    per_trial: list[tuple[int, float]]  # (n, Var(n)): a trial's log-median variance when it measures n steps
    between: float  # σ_b²: Var at the trials' own length less what their steps explain
    within: float  # σ_w²: per-step variance
    fixed_s: float  # c_1: median fixed cost per trial
    trials: int  # measured trials it was read from
    repeated_points: int  # points with two or more trials

    def variance(self, steps: int) -> float:
        """Var(n) at the longest measured n not above `steps`."""
        known = [(n, v) for n, v in self.per_trial if n <= steps] or self.per_trial[:1]
        return known[-1][1]

    def cost(self, steps: int, step_s: float) -> float:
        """Var(n) · (c_1 + n c_2): the inverse of the precision one second of such trials buys."""
        return self.variance(steps) * (self.fixed_s + steps * step_s)

    def steps(self, step_s: float, planned: int) -> int | None:
        """The best n for a point whose step takes `step_s` and whose trials measured `planned` steps; None where no
        shorter measured length beats `planned`."""
        shorter = [n for n, _ in self.per_trial if n < planned]
        if not shorter or step_s <= 0:
            return None
        best = min(shorter, key=lambda n: self.cost(n, step_s))
        return best if self.cost(best, step_s) < self.cost(planned, step_s) else None

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, state: dict) -> VarianceComponents:
        return cls(**(state | {"per_trial": [tuple(pair) for pair in state["per_trial"]]}))


def variance_components(rows: Sequence[dict]) -> VarianceComponents | None:
    """The components from one node's measured rows (None where no point has two trials with their steps)."""
    measured = [r for r in (clean_row(r) for r in rows) if r["_ok"] and not r.get("shared_from")]
    measured = [r for r in measured if step_times(r) and len(step_times(r)) >= CANDIDATE_STEPS[0]]
    groups: dict[str, list[list[float]]] = {}
    for r in measured:
        groups.setdefault(r["config_key"], []).append(step_times(r))
    lengths = sorted({len(s) for g in groups.values() for s in g})
    per_trial = []
    for n in [*CANDIDATE_STEPS, statistics.median_low(lengths)] if lengths else []:
        variance = truncated_variance(groups.values(), n)
        if variance is not None and all(n != m for m, _ in per_trial):
            per_trial.append((n, variance))
    per_trial.sort()
    if not per_trial:
        return None
    within = statistics.median(per_step_variance(step_times(r)) for r in measured)
    full = statistics.median_low(lengths)
    between = per_trial[-1][1] - MEDIAN_EFFICIENCY * within / full
    fixed = statistics.median(sum(v for k, v in trial_parts(r).items() if k != "measured_s") for r in measured)
    repeated = sum(len(g) >= 2 for g in groups.values())
    return VarianceComponents(per_trial, between, within, fixed, len(measured), repeated)


def truncated_variance(groups, steps: int) -> float | None:
    """Pooled variance, over the points' repeats, of each trial's log median over its first `steps` measured steps
    (trials shorter than that left out; None where no point keeps two)."""
    squares, df = 0.0, 0
    for trials in groups:
        medians = [math.log(float(np.median(t[:steps]))) for t in trials if len(t) >= steps]
        if len(medians) >= 2:
            squares += float(np.var(medians)) * len(medians)
            df += len(medians) - 1
    return squares / df if df else None


def per_step_variance(steps: Sequence[float]) -> float:
    """Per-step log variance as a median sees it: 1.4826 x the median absolute deviation, squared (a rare 500 ms step
    among 80 ms ones moves a median by one rank and a variance by ten times)."""
    logs = np.log(np.asarray(steps, dtype=float))
    return (MAD_TO_SD * float(np.median(np.abs(logs - np.median(logs))))) ** 2
