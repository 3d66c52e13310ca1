"""Racing: which ratios of a budgeted sweep are decided, by a rule that stays valid when it looks after every round.

A budgeted sweep (`budget:` in the plan, `bench.py run --budget 15m`) measures every point in its first rounds, then
keeps adding rounds for the points whose ratio to their study's reference is still undecided (racing, as in irace's
F-race, applied to the study's ratios). A ratio is decided when its interval lies wholly outside 1 ± δ (an effect:
faster or slower) or wholly inside it (no effect larger than δ).

Why not the report's 95% interval each round: looking again after every round and stopping at the first interval
that excludes 1.0 is optional stopping; with 10 looks a plain 95% interval declares a false effect in ~20% of null
studies (tests/test_racing.py shows it). The rule here spends the error rate over the looks (an alpha-spending
confidence sequence made by a union bound; Howard et al. 2021, "Time-uniform, nonparametric, nonasymptotic confidence
sequences", §1 take it as the baseline every sharper sequence improves on): look k (k = 1 at the sweep's first look)
uses a 1 - α_k interval with

    α_k = α / (k (k + 1)),   Σ_k α_k = α = 5%,

so the chance that any look, however many the budget allows, holds an interval that misses the true ratio is at most
α. The looks are replayed from the stored rows: look k sees the rounds before `first_round + k` (a row's `repeat` is
its round), so the report, the runner and a resumed sweep reach the same decision from the same rows, and each look
is taken once.

The interval at each look is the paired one of sweep/results/paired.py: each round's point over the same round's
reference (the drift they share cancels), Student's t over the rounds seen, the variance pooled over every ratio of
the node in those rounds and never below the ratio's own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sweep.results.paired import Pooled, Trials, differences, interval, node_pool
from sweep.results.rows import clean_row, is_control, plan_order, study_shape

ALPHA = 0.05
DEFAULT_DELTA = 0.05
FIRST_LOOK_ROUNDS = 2  # the fewest repeats a point's own variance can be read from
FASTER, SLOWER, UNDECIDED = "faster", "slower", "undecided"
# why a budgeted sweep's racing ended (sweep/racing_rounds.py sets the key, the closing line and report say the text)
STOPPED = {"decided": "every ratio decided", "budget": "budget spent", "rounds": "round limit"}


def look_alpha(look: int) -> float:
    """The error rate look `look` (1, 2, ...) may spend: they sum to ALPHA over every look there could be."""
    return ALPHA / (look * (look + 1))


def no_effect_text(delta: float) -> str:
    return f"no effect larger than {delta:.0%}"


@dataclass(frozen=True)
class Decision:
    """A ratio's state after the last look: the verdict, the ratio (geometric mean of the point's trials over the
    reference's) and its interval at that look's level, and how many repeats each side had."""

    verdict: str  # FASTER, SLOWER, no_effect_text(delta) or UNDECIDED
    ratio: float
    low: float | None
    high: float | None
    repeats: int
    reference_repeats: int
    look: int  # the look that decided it, or the last one taken (0: none yet)
    alpha: float | None  # that look's error rate

    @property
    def decided(self) -> bool:
        return self.verdict != UNDECIDED

    def text(self) -> str:
        if self.decided:  # the interval that decided it: the sequence's, at its look's level
            level = f"{100 * (1 - self.alpha):.2f}".rstrip("0").rstrip(".") + "%"
            return (
                f"{self.verdict}: {self.low:.2f}–{self.high:.2f} at {level} (look {self.look}, {self.repeats} repeats)"
            )
        if self.low is None:
            return f"undecided after {self.repeats} repeats"
        half = math.sqrt(self.high / self.low) - 1
        return f"undecided at ±{half:.0%} after {self.repeats} repeats"


def verdict_of(low: float | None, high: float | None, delta: float) -> str:
    if low is None:
        return UNDECIDED
    if low > 1 + delta:
        return SLOWER
    if high < 1 - delta:
        return FASTER
    if delta > 0 and 1 - delta <= low and high <= 1 + delta:
        return no_effect_text(delta)
    return UNDECIDED


def sequential_decision(
    point: Trials,
    reference: Trials,
    pool: Sequence[tuple[Trials, Trials]],
    *,
    first_round: int,
    delta: float,
) -> Decision:
    """Replay the looks over (round, log median) trials of the point and its reference; `pool`: every ratio of the
    node as (point's trials, reference's trials), its paired variance pooled look by look. Look k sees rounds
    0 .. first_round + k - 2: look 1 the first `first_round` rounds, each later look one round more. The first look
    that decides wins."""
    last_round = max((r for r, _ in [*point, *reference]), default=-1)
    decision = Decision(UNDECIDED, float("nan"), None, None, len(point), len(reference), 0, None)
    for look, rounds in enumerate(range(first_round, last_round + 2), start=1):
        diffs = differences(point, reference, rounds)
        if not diffs:
            continue
        alpha = look_alpha(look)
        ratio, low, high = interval(diffs, node_pool(pool, rounds), alpha)
        seen = (sum(r < rounds for r, _ in point), sum(r < rounds for r, _ in reference))
        decision = Decision(verdict_of(low, high, delta), ratio, low, high, *seen, look, alpha)
        if decision.decided:
            return decision
    return decision


# ---- from stored rows --------------------------------------------------------------------------------------------
def race(rows: Sequence[dict], *, first_round: int, delta: float) -> dict[tuple[str, str, str], Decision]:
    """Every ratio of a sweep's grid studies, (node, study, config_key) -> its Decision."""
    decisions = {}
    for node, (trials, studies) in node_studies(rows).items():
        pool = ratio_pairs(trials, studies)
        for study, keys in studies.items():
            for key in keys[1:]:
                decisions[(node, study, key)] = sequential_decision(
                    trials[key], trials[keys[0]], pool, first_round=first_round, delta=delta
                )
    return decisions


def ratio_pairs(trials: dict[str, list], studies: dict[str, list[str]]) -> list[tuple[Trials, Trials]]:
    """Every ratio of a node's studies as (point's trials, reference's trials): the pool of paired variances."""
    return [(trials[key], trials[keys[0]]) for keys in studies.values() for key in keys[1:]]


def node_studies(rows: Sequence[dict]) -> dict[str, tuple[dict[str, list[tuple[int, float]]], dict[str, list[str]]]]:
    """node -> (config_key -> its trials as (round, log median step time), study -> its measured config_keys with the
    reference first). The reference is the study's first point in the report's order (the smallest value of a
    numeric axis, else plan order). Grid rows only: control points and refined points are not a study's ratios."""
    grid = [clean_row(r) for r in rows if r.get("phase", "grid") == "grid" and not is_control(r)]
    found = {}
    for node in sorted({str(r.get("node") or "") for r in grid}):
        mine = sorted((r for r in grid if str(r.get("node") or "") == node), key=plan_order)
        trials: dict[str, list[tuple[int, float]]] = {}
        for r in mine:  # a copy of another study's measurement is the same trial: counted once
            if r["_ok"] and not r.get("shared_from"):
                trials.setdefault(r["config_key"], []).append(
                    (int(r.get("repeat") or 0), math.log(r["step_time_median_s"]))
                )
        by_study: dict[str, list[dict]] = {}
        for r in mine:
            by_study.setdefault(str(r.get("study")), []).append(r)
        studies = {}
        for study, study_rows in by_study.items():
            ordered = dict.fromkeys(r["config_key"] for r in study_shape(study_rows)[-1])
            studies[study] = [key for key in ordered if trials.get(key)]
        found[node] = (trials, studies)
    return found


def node_pools(rows: Sequence[dict]) -> dict[str, Pooled | None]:
    """node -> the paired variance pooled over every ratio of its studies (the report's intervals use it)."""
    return {node: node_pool(ratio_pairs(trials, studies)) for node, (trials, studies) in node_studies(rows).items()}


def to_remeasure(rows: Sequence[dict], decisions: dict[tuple[str, str, str], Decision]) -> set[tuple[str, str]]:
    """(node, config_key) of every point with an undecided ratio, and of the reference it is compared with."""
    wanted = set()
    for node, (_, studies) in node_studies(rows).items():
        for study, keys in studies.items():
            undecided = [key for key in keys[1:] if not decisions[(node, study, key)].decided]
            wanted |= {(node, key) for key in undecided} | ({(node, keys[0])} if undecided else set())
    return wanted


# ---- what the intervals could resolve ----------------------------------------------------------------------------
def half_width(low: float | None, high: float | None) -> float | None:
    """An interval's half-width as a factor (0.09: ±9%), symmetric in log space."""
    return None if low is None or high is None or low <= 0 else math.sqrt(high / low) - 1


def minimum_detectable_effect(half_widths: Sequence[float | None]) -> float | None:
    """The smallest effect these 95% intervals could have told from 1.0, as the median over the ratios: a ratio
    further from 1.0 than its interval's half-width has an interval that excludes 1.0."""
    known = sorted(h for h in half_widths if h is not None)
    return float(np.median(known)) if known else None
