"""Racing's rule (sweep/results/racing.py) on synthetic trials: what it decides, how fast, and that repeated looks do
not inflate its false effects; the Kalibera-Jones trial length (sweep/results/measure_length.py) from rows."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sweep.results import paired, racing
from sweep.results.measure_length import variance_components
from sweep.results.racing import UNDECIDED, look_alpha, no_effect_text, race, sequential_decision, to_remeasure

# this VM's noise (benchmarks/README.md, "Numbers a user can trust"): whole trials shift level by ~6% (sd), a step
# varies by ~8% around its trial's level; a quick-plan trial measures ~60 steps
BETWEEN_SD, STEP_SD, STEPS = 0.06, 0.08, 60


def trial_medians(rng, rounds: int, effect: float = 0.0, between=BETWEEN_SD, steps=STEPS) -> list[tuple[int, float]]:
    """(round, log median step time) of `rounds` trials of a point `effect` (log) away from the reference."""
    levels = rng.normal(effect, between, rounds)
    noise = np.median(rng.normal(0.0, STEP_SD, (rounds, steps)), axis=1)
    return [(r, float(levels[r] + noise[r])) for r in range(rounds)]


def null_study(rng, rounds: int, others: int = 3):
    """A point and its reference with no effect, and other null ratios of the node that share the pooled variance."""
    pool = [(trial_medians(rng, rounds), trial_medians(rng, rounds)) for _ in range(others)]
    point, reference = trial_medians(rng, rounds), trial_medians(rng, rounds)
    return point, reference, [(point, reference), *pool]


def test_the_looks_spend_at_most_alpha_however_many_there_are():
    assert look_alpha(1) == pytest.approx(0.025)
    assert sum(look_alpha(k) for k in range(1, 10_000)) == pytest.approx(racing.ALPHA, rel=1e-3)
    assert sum(look_alpha(k) for k in range(1, 10_000)) < racing.ALPHA


def test_a_clear_effect_is_decided_at_the_first_look():
    rng = np.random.default_rng(1)
    point, reference = trial_medians(rng, 10, effect=math.log(1.4)), trial_medians(rng, 10)
    others = [(trial_medians(rng, 10), trial_medians(rng, 10)) for _ in range(3)]  # the node's other ratios
    pool = [(point, reference), *others]
    decision = sequential_decision(point, reference, pool, first_round=3, delta=0.05)
    assert decision.verdict == racing.SLOWER
    assert decision.look == 1 and decision.repeats == 3  # decided on the first three rounds, not all ten
    assert 1.2 < decision.ratio < 1.7 and decision.low > 1.05


def test_a_null_effect_on_a_quiet_machine_ends_as_no_effect_larger_than_delta():
    rng = np.random.default_rng(2)
    quiet = dict(between=0.005)
    point, reference = trial_medians(rng, 8, **quiet), trial_medians(rng, 8, **quiet)
    decision = sequential_decision(point, reference, [(point, reference)], first_round=2, delta=0.05)
    assert decision.verdict == no_effect_text(0.05) == "no effect larger than 5%"
    assert 0.95 <= decision.low <= decision.high <= 1.05


def test_a_noisy_point_stays_undecided_and_says_how_wide_it_is():
    rng = np.random.default_rng(3)
    noisy = dict(between=0.3)
    point, reference = trial_medians(rng, 20, effect=0.03, **noisy), trial_medians(rng, 20, **noisy)
    decision = sequential_decision(point, reference, [(point, reference)], first_round=2, delta=0.05)
    assert decision.verdict == UNDECIDED and decision.look == 19 and decision.repeats == 20
    assert decision.text().startswith("undecided at ±") and decision.text().endswith("after 20 repeats")


def false_effects(rule_alpha, delta: float, studies: int = 1000, rounds: int = 10) -> float:
    """Share of null studies in which racing ended with an effect; rule_alpha(look) is the level of each look."""
    rng = np.random.default_rng(4)
    effects = 0
    for _ in range(studies):
        point, reference, pool = null_study(rng, rounds)
        for look, seen in enumerate(range(2, rounds + 1), start=1):
            diffs = paired.differences(point, reference, seen)
            _, low, high = paired.interval(diffs, paired.node_pool(pool, seen), rule_alpha(look))
            verdict = racing.verdict_of(low, high, delta)
            if verdict != UNDECIDED:
                effects += verdict in (racing.FASTER, racing.SLOWER)
                break
    return effects / studies


@pytest.mark.parametrize("delta", [0.05, 0.0])
def test_over_1000_null_studies_at_most_5_percent_end_as_an_effect(delta):
    assert false_effects(look_alpha, delta) <= 0.05


def test_a_plain_95_percent_interval_checked_every_round_would_not_hold():
    # the test above can fail: the same looks at a fixed 5% each declare far more false effects
    assert false_effects(lambda look: 0.05, 0.0) > 0.08


def test_the_replay_is_the_racing_decision():
    """sequential_decision replays the looks: the first that decides wins, whatever later rounds say."""
    rng = np.random.default_rng(5)
    point, reference = trial_medians(rng, 3, effect=math.log(1.5)), trial_medians(rng, 3)
    later = [(r + 3, v - math.log(1.5)) for r, v in trial_medians(rng, 6)]  # later rounds back at the reference's
    early = sequential_decision(point, reference, [(point, reference)], first_round=3, delta=0.05)
    replayed = sequential_decision(point + later[:3], reference, [(point, reference)], first_round=3, delta=0.05)
    assert early.decided and replayed == early


def rows_of(node: str, study: str, key: str, point: dict, trials: list[tuple[int, float]], **extra) -> list[dict]:
    return [
        {"node": node, "study": study, "config_key": key, "point": point, "repeat": r, "phase": "grid", "status": "ok"}
        | {"step_time_median_s": math.exp(v)}
        | extra
        for r, v in trials
    ]


def test_race_reads_stored_rows_and_names_what_to_measure_again():
    rng = np.random.default_rng(6)
    base = trial_medians(rng, 3)
    rows = rows_of("n", "width", "k128", {"width": 128}, trial_medians(rng, 3, effect=math.log(0.5)))
    rows += rows_of("n", "width", "k256", {"width": 256}, base)
    rows += rows_of("n", "depth", "k256", {"depth": 4}, base, shared_from="n/width/k256/0")  # the same trials
    rows += rows_of("n", "depth", "k8", {"depth": 8}, trial_medians(rng, 3, effect=0.02))
    decisions = race(rows, first_round=3, delta=0.05)
    # width: the reference is the smallest value (128); 256 is twice as slow, decided at once
    assert decisions[("n", "width", "k256")].verdict == racing.SLOWER
    depth = decisions[("n", "depth", "k8")]
    assert depth.verdict == UNDECIDED and depth.reference_repeats == 3  # the shared copies counted once
    assert to_remeasure(rows, decisions) == {("n", "k8"), ("n", "k256")}


def kj_rows(rng, *, between: float, transient: float, steps: int = 120) -> list[dict]:
    """Four trials of each of three points: level shifts of sd `between`, 8% per-step noise, and a start transient
    of sd `transient` on each trial's first 12 measured steps (a fresh process settling)."""
    rows = []
    for key in ("a", "b", "c"):
        for repeat in range(4):
            level = rng.normal(math.log(0.08), between)
            logs = level + rng.normal(0, 0.08, steps)
            logs[:12] += rng.normal(0, transient)
            times = list(np.exp(logs))
            rows.append(
                {"node": "n", "study": "s", "config_key": key, "status": "ok", "repeat": repeat}
                | {"step_time_median_s": float(np.median(times)), "step_times_s": times}
                | {"timed_region_s": 10.1, "time_to_first_step_s": 0.1, "measured_region_s": 9.6, "startup_s": 0.5}
                | {"wall_s": 11.0, "import_s": 0.0}
            )
    return rows


def test_kalibera_jones_steps_from_the_variance_components():
    # trials shift level a lot, steps are steady: many short trials beat few long ones
    components = variance_components(kj_rows(np.random.default_rng(7), between=0.10, transient=0.0))
    assert components.trials == 12 and components.repeated_points == 3
    assert components.fixed_s == pytest.approx(11.0 - 9.6)  # everything but the measured steps
    assert 0.06 < math.sqrt(components.within) < 0.10  # the per-step sd, 8%
    assert 0.05 < math.sqrt(max(components.between, 0)) < 0.2
    assert [n for n, _ in components.per_trial][:3] == [10, 15, 20] and components.per_trial[-1][0] == 120
    best = components.steps(0.08, 120)
    assert best is not None and best < 40
    assert components.cost(best, 0.08) < components.cost(120, 0.08)
    # the same, but a fresh trial's first steps wander (bursts, a process settling): measured, not assumed away, the
    # variance of a short trial says so, and the trials stay well past the settling steps
    settling = variance_components(kj_rows(np.random.default_rng(7), between=0.02, transient=0.4))
    assert settling.variance(10) > 4 * settling.variance(120)
    assert (settling.steps(0.08, 120) or 120) >= 40
