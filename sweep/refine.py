"""Optuna refinement: after a study's grid points, add points where its timing curve bends.

`BendSampler` is a small Optuna sampler. It reads every completed trial of the Optuna study (the
grid results, given to OptunaSearch as evaluated points, and earlier refined points), scores each
interval between neighbouring values with `sweep.results.fit.bend_scores` (how badly log-log interpolation
explains the curve there), and proposes the value nearest the (geometric) middle of the
highest-scoring interval that the model accepts and that was not measured yet. Ray Tune runs each
proposal as an ordinary trial through `ray.tune.search.optuna.OptunaSearch`; the Optuna study lives
in a SQLite file beside the store.

Optuna gives the sampler one value per trial and no uncertainty, so a point that sits off the line
because its trial ran on a slow minute would look like a bend. Given `noise` (each measured value's
95% half-width in log space, from the stored rows: `point_noise`, `BendSampler.from_rows`), the scores
count only the part of each error beyond what the points' own intervals explain, so an interval whose
bend is within the noise scores 0 and is never preferred over a real bend.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler
from optuna.trial import TrialState

from sweep.results.fit import bend_scores
from sweep.results.rows import estimate_of, is_positive

OPTUNA_DB = "optuna.db"
MAX_INT_CANDIDATES = 4096


def optuna_storage(result_dir: Path) -> optuna.storages.RDBStorage:
    return optuna.storages.RDBStorage(f"sqlite:///{(Path(result_dir) / OPTUNA_DB).resolve()}")


def study_name(sweep_id: str, study: str, node: str | None = None) -> str:
    return f"{sweep_id}/{study}" + (f"@{node}" if node else "")


def measured_points(study: optuna.Study, param: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        value = trial.value
        if param in trial.params and value is not None and math.isfinite(value):
            xs.append(trial.params[param])
            ys.append(value)
    return xs, ys


def _middle(low: float, high: float, log: bool) -> float:
    return math.sqrt(low * high) if log and low > 0 else (low + high) / 2


def candidates(low: float, high: float, distribution, log: bool) -> list[float]:
    """Values strictly inside (low, high), nearest the middle first."""
    middle = _middle(low, high, log)
    if isinstance(distribution, IntDistribution):
        first, last = math.floor(low) + 1, math.ceil(high) - 1
        if last < first:
            return []
        if last - first > MAX_INT_CANDIDATES:  # a wide interval: a ladder around the middle is enough
            step = (last - first) // MAX_INT_CANDIDATES + 1
            values = range(first, last + 1, step)
        else:
            values = range(first, last + 1)
        key = (lambda v: abs(math.log(v) - math.log(middle))) if log and first > 0 else (lambda v: abs(v - middle))
        return sorted(values, key=key)
    return [round(middle, 4)] if low < round(middle, 4) < high else []


def point_noise(rows: list[dict], axis: str) -> dict[float, float]:
    """Each value of the axis -> the 95% half-width, in log space, of its point's median step time over the repeats
    among the stored rows (sweep/results/stats.py); values without an interval are left out."""
    by_value: dict[float, list[dict]] = {}
    for r in rows:
        point = json.loads(r["point"]) if isinstance(r.get("point"), str) else r.get("point") or {}
        if r.get("status") == "ok" and is_positive(r.get("step_time_median_s")) and axis in point:
            by_value.setdefault(point[axis], []).append(r)
    noise = {value: estimate_of(repeats, f"{axis}={value}").log_half_width for value, repeats in by_value.items()}
    return {value: width for value, width in noise.items() if width is not None}


class BendSampler(BaseSampler):
    def __init__(
        self, accepts: Callable[[float], bool], log: bool, seed: int = 0, noise: dict[float, float] | None = None
    ):
        """noise (optional): value -> log half-width of its 95% interval (`point_noise`). A value Optuna adds later
        (a refined point, not in the rows the sampler was built from) gets the median of the known half-widths: the
        same machine and model size, so about the same noise. Without it every error counts in full."""
        self.accepts, self.log = accepts, log
        self.noise = dict(noise or {})
        self._fallback = optuna.samplers.RandomSampler(seed=seed)
        self.last_choice: tuple[float, float, float] | None = None  # (low, high, score) of the last proposal

    @classmethod
    def from_rows(cls, accepts: Callable[[float], bool], log: bool, rows: list[dict], axis: str, seed: int = 0):
        """The sampler with the noise of the points in `rows` (a study's ok rows on one node)."""
        return cls(accepts, log, seed, noise=point_noise(rows, axis))

    def noise_of(self, xs: list[float]) -> list[float] | None:
        if not self.noise:
            return None
        typical = statistics.median(self.noise.values())
        return [self.noise.get(x, typical) for x in xs]

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        xs, ys = measured_points(study, param_name)
        taken = set(xs)
        for low, high, score in sorted(bend_scores(xs, ys, self.noise_of(xs)), key=lambda s: -s[2]):
            for value in candidates(low, high, param_distribution, self.log):
                if value not in taken and self.accepts(value):
                    self.last_choice = (low, high, score)
                    return value
        # every interval is exhausted: nothing left to learn between the points, sample anywhere valid
        self.last_choice = None
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)


def distribution_for(values: list[float], integer: bool):
    low, high = min(values), max(values)
    log = low > 0 and high / low >= 4
    cls = IntDistribution if integer else FloatDistribution
    return cls(int(low) if integer else float(low), int(high) if integer else float(high), log=log), log


def bend_score_of(x: float, xs: list[float], ys: list[float], noise: list[float] | None = None) -> float | None:
    """The score of the interval of the earlier points that contains x: what chose x (noise: as the sampler's)."""
    for low, high, score in bend_scores(xs, ys, noise):
        if low < x < high:
            return score
    return None
