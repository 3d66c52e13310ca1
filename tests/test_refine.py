"""Optuna refinement: the BendSampler on a cheap curve with a known bend, then a real refined study
through Ray Tune and Optuna with tiny models, interrupted and resumed."""

import json
import math

import optuna
import pytest

from sweep.refine import BendSampler, distribution_for, optuna_storage, point_noise, study_name
from sweep.results.fit import segmented_fit
from sweep.results.store import Store
from tests.bench_process import kill_session, run_bench, start_bench, write_plan
from tests.test_sweep_end_to_end import wait_for_rows

KNEE = 700.0


def known_bend(x: float) -> float:
    """Step time that grows like x up to the knee, then like x^3 (a working set leaving a cache)."""
    return x / 1000 if x <= KNEE else (KNEE / 1000) * (x / KNEE) ** 3


def refine(grid: list[int], points: int, accepts=lambda v: True, curve=known_bend, noise=None) -> list[int]:
    distribution, log = distribution_for(grid, integer=True)
    study = optuna.create_study(sampler=BendSampler(accepts, log, noise=noise))
    for x in grid:  # the grid results, as OptunaSearch adds them
        study.add_trial(
            optuna.trial.create_trial(params={"width": x}, distributions={"width": distribution}, value=curve(x))
        )
    study.optimize(
        lambda t: curve(t.suggest_int("width", distribution.low, distribution.high, log=log)), n_trials=points
    )
    return [t.params["width"] for t in study.trials[len(grid) :]]


def test_refined_points_concentrate_where_the_curve_bends():
    grid = [128, 256, 512, 1024, 2048]
    added = refine(grid, 4)
    assert len(set(added)) == 4 and not set(added) & set(grid)
    assert sum(512 < x < 1024 for x in added) >= 3  # the interval holding the knee
    xs = sorted(grid + added)
    fit = segmented_fit(xs, [known_bend(x) for x in xs])
    steps = sorted(xs)
    i = next(i for i, x in enumerate(steps) if x >= KNEE)
    assert steps[i - 1] <= fit["knee_x"] <= steps[i]  # within one (refined) grid step of the truth
    assert fit["slope_before"] == pytest.approx(1.0, abs=0.1) and fit["slope_after"] == pytest.approx(3.0, abs=0.3)


def test_only_values_the_model_accepts():
    added = refine([128, 512, 2048], 3, accepts=lambda v: v % 64 == 0)
    assert all(x % 64 == 0 for x in added)


def slow_trial_and_bend(x: float) -> float:
    """Slope 1 in log-log with a real bend at 16 (slope 2 after it), and one trial at 4 that ran 1.6x slow."""
    return (1.6 if x == 4 else 1.0) * (x if x <= 16 else 16 * (x / 16) ** 2)


def test_a_bend_within_the_noise_is_not_chased():
    grid = [1, 2, 4, 8, 16, 32]
    # one value per trial, as Optuna sees them: the slow trial at 4 outscores the bend and draws the next point
    assert refine(grid, 1, curve=slow_trial_and_bend) == [3]
    # with each point's 95% half-width (the slow one's interval spans a factor 1.8 either way), the bend wins
    noise = {1: 0.02, 2: 0.02, 4: math.log(1.8), 8: 0.02, 16: 0.02, 32: 0.02}
    assert refine(grid, 1, curve=slow_trial_and_bend, noise=noise) == [11]  # nearest sqrt(8 * 16)
    assert refine(grid, 1, curve=slow_trial_and_bend, noise={}) == [3]  # no noise known: every error counts


def noise_rows(width: int, levels: list[float]) -> list[dict]:
    steps = [0.97, 0.99, 1.0, 1.01, 1.03]
    return [
        {"point": json.dumps({"width": width}), "status": "ok", "step_time_median_s": level, "repeat": i}
        | {"step_times_s": [level * s for s in steps]}
        for i, level in enumerate(levels)
    ]


def test_the_sampler_gets_each_points_noise_from_the_stored_rows():
    rows = noise_rows(4, [1.0, 1.6, 0.8]) + noise_rows(8, [2.0, 2.02, 1.98]) + noise_rows(16, [4.0])
    rows.append({"point": json.dumps({"width": 32}), "status": "failed", "step_time_median_s": None})
    noise = point_noise(rows, "width")
    assert set(noise) == {4, 8, 16}  # the failed value has no interval
    assert noise[4] > 0.5 and noise[8] < 0.1  # three repeats 0.8-1.6 apart, three within 1%
    # 16: one repeat, its 5 steps only; a resample's median is the fastest step 5.8% of the time, the slowest too
    assert noise[16] == pytest.approx(0.5 * math.log(1.03 / 0.97), abs=1e-12)
    sampler = BendSampler.from_rows(lambda v: True, True, rows, "width")
    assert sampler.noise == noise
    assert sampler.noise_of([4, 12]) == [noise[4], noise[8]]  # an unmeasured value: the median half-width
    assert BendSampler(lambda v: True, True).noise_of([4]) is None  # today's call: no noise, plain scores


def test_a_real_refined_study_resumes_without_repeating_points(tmp_path):
    plan = write_plan(
        tmp_path / "refine.yaml",
        [{"name": "width", "axis": "width", "values": [16, 64, 256], "refine": {"points": 3}}],
        name="refine",
    )
    store = Store(tmp_path / "store")
    proc = start_bench("run", "--plan", str(plan), "--result-dir", str(store.root))
    try:
        wait_for_rows(store, 4, proc)  # the grid and the first refined point
    finally:
        kill_session(proc)
    done = run_bench("run", "--resume", "--result-dir", str(store.root))
    assert done.returncode == 0, done.stdout[-3000:]

    rows = store.rows()
    refined = [r for r in rows if r["phase"] == "refine"]
    widths = [json.loads(r["point"])["width"] for r in rows]
    assert len(rows) == 6 and len(refined) == 3
    assert len(set(widths)) == 6  # no refined point measured twice
    assert all(r["status"] == "ok" and r["width"] % 2 == 0 for r in refined)  # heads=2 must divide width
    assert all(r["bend_score"] is not None and math.isfinite(r["bend_score"]) for r in refined)
    sweep = rows[0]["sweep"]
    study = optuna.load_study(study_name=study_name(sweep, "width"), storage=optuna_storage(store.root))
    complete = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    assert {t.params["width"] for t in complete} == set(widths)
