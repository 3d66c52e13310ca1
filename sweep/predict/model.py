"""A prediction from the fit: what the model covers, the predicted step time, and its interval.

Covered: a config is predicted from the fit of its own framework x precision on a node (any measured config of it
there; with few, the fit leans on one common efficiency for every class, fit.py, and there is no interval), where
- its kernel choices were measured in that fit (COVERED_KEYS: compile, attention backend, optimizer, BLAS, fusion,
  the fused Linear+activation, frozen layers each change what a class of work costs, which no feature says), and
- each class's work lies within COVER_FACTOR of what the fit saw (a 10x larger matmul count than any measured step
  is an extrapolation the store never checked: caches, memory and thread scaling change on the way);
- the node has roofs measured at its dtype, threads and ISA cap (roofs.py).
System knobs (allocator, pinning, OpenMP settings, NUMA, interop threads) are not features: a prediction is for the
settings the fit's rows ran with (mostly the plan's baseline), and their spread widens the interval.

The interval: each of the fit's configs is held out in turn, the rest refitted, and the held-out config predicted
(leave-one-config-out); the 5th and 95th percentiles of log(measured / predicted) over those configs, applied to the
prediction, give a 90% prediction interval: how far the model missed on configs it had not seen, of this node and
framework x precision. It needs MIN_INTERVAL held-out predictions; with fewer there is none.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from sweep.predict.features import CLASSES, PredictError, Roofs, seconds_at_roof, work_of
from sweep.predict.fit import Fit, Point, fit_points, group_of, log_ratio
from sweep.predict.roofs import NodeRoofs
from trainables.config import TrialConfig

COVERED_KEYS = ("compile", "attn_backend", "optimizer", "blas", "fusion", "fused_linear_act", "freeze_layers")
COVER_FACTOR = 10.0
MIN_INTERVAL = 5
INTERVAL = (0.05, 0.95)


@dataclass
class Held:
    """One config held out: predicted from the others, or refused with the reason."""

    point: Point
    predicted_s: float | None
    refused: str | None


@dataclass
class Prediction:
    node: str
    cfg: TrialConfig
    step_time_s: float
    low_s: float | None
    high_s: float | None
    interval_configs: int  # held-out predictions the interval comes from
    roofs: Roofs
    threads: int
    dtype: str
    fit: Fit
    breakdown: dict[str, float]  # seconds per class

    @property
    def tokens_per_s(self) -> float:
        return self.cfg.tokens_per_step / self.step_time_s


def group_name(group: tuple[str, str]) -> str:
    return f"framework={group[0]} precision={group[1]}"


def coverage_problem(cfg: TrialConfig, work: dict[str, float], points: list[Point], where: str) -> str | None:
    """Why `points` (one node's fit of cfg's framework x precision) do not cover cfg, or None."""
    for key in COVERED_KEYS:
        seen = sorted({str(getattr(p.cfg, key)) for p in points})
        if str(getattr(cfg, key)) not in seen:
            return f"{key}={getattr(cfg, key)}: the fit {where} measured {key} {', '.join(seen)} only"
    for c in CLASSES:
        low, high = min(p.work[c] for p in points), max(p.work[c] for p in points)
        if work[c] > high * COVER_FACTOR or (low > 0 and work[c] < low / COVER_FACTOR):
            return (
                f"{c} work {work[c]:.3g} per step is outside {COVER_FACTOR:g}x of what the fit {where} measured "
                f"({low:.3g} to {high:.3g}): the model extrapolates no further"
            )
    return None


def group_points(points: list[Point], cfg: TrialConfig, where: str) -> list[Point]:
    """The points of cfg's framework x precision; refuses with the reason when there are none."""
    group = [p for p in points if p.group == group_of(cfg)]
    if not group:
        have = {}
        for p in points:
            have[p.group] = have.get(p.group, 0) + 1
        measured = ", ".join(f"{group_name(g)} ({n} configs)" for g, n in sorted(have.items())) or "nothing"
        raise PredictError(
            f"{group_name(group_of(cfg))}: no ok rows of that {where}; the model covers only what was measured "
            f"there: {measured}"
        )
    return group


def leave_one_config_out(points: list[Point], where: str) -> list[Held]:
    """Each point predicted from a fit on the others (one point per config_key, so all its rows are held out)."""
    held = []
    for point in points:
        others = [p for p in points if p.config_key != point.config_key]
        if not others:
            held.append(Held(point, None, f"no other config {where} to fit on"))
            continue
        problem = coverage_problem(point.cfg, point.work, others, where)
        if problem:
            held.append(Held(point, None, problem))
            continue
        held.append(Held(point, fit_points(others).predict(point.features), None))
    return held


def interval_factors(held: list[Held]) -> tuple[float, float, int] | None:
    """(low, high) multipliers of a prediction from the held-out log ratios, and their count; None with too few."""
    ratios = [log_ratio(h.point.measured_s, h.predicted_s) for h in held if h.predicted_s is not None]
    ratios = [r for r in ratios if math.isfinite(r)]
    if len(ratios) < MIN_INTERVAL:
        return None
    low, high = np.quantile(ratios, INTERVAL)
    return math.exp(low), math.exp(high), len(ratios)


def predict_step(cfg: TrialConfig, points: list[Point], target: NodeRoofs, where: str) -> Prediction:
    """Predict cfg's step time on `target` with the efficiencies fitted on `points` (one node's, or every node's for a
    fingerprinted host)."""
    group = group_points(points, cfg, where)
    where = f"of {group_name(group_of(cfg))} {where}"
    work = work_of(cfg)
    problem = coverage_problem(cfg, work, group, where)
    if problem:
        raise PredictError(problem)
    dtype = Counter(p.dtype for p in group).most_common(1)[0][0]  # one per framework x precision on a node
    threads = target.threads_for(cfg)
    roofs = target.roofs(dtype, threads, cfg.isa)
    features = seconds_at_roof(work, roofs)
    fit = fit_points(group)
    step = fit.predict(features)
    if not step > 0:
        raise PredictError(f"the fit {where} gives no time at all: measure more configs")
    factors = interval_factors(leave_one_config_out(group, where))
    low, high, count = (step * factors[0], step * factors[1], factors[2]) if factors else (None, None, 0)
    return Prediction(target.node, cfg, step, low, high, count, roofs, threads, dtype, fit, fit.breakdown(features))
