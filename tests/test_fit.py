"""Curve fitting: the segmented log-log knee, Amdahl's serial fraction, speed-up, and the bend score per interval."""

import math

import numpy as np
import pytest

from sweep.results.fit import (
    KNEE_GRID_STEPS,
    amdahl_fit,
    bend_evidence,
    bend_scores,
    knee_f_test,
    predict_segmented,
    segmented_fit,
    speedup_and_efficiency,
)

GRID = [8, 16, 32, 64, 128, 256, 512]


def bent(x: float, knee: float) -> float:
    """y = x up to the knee, then slope 2 in log-log, continuous at the knee."""
    return x if x <= knee else knee * (x / knee) ** 2


def test_knee_at_a_measured_point_is_exact():
    fit = segmented_fit(GRID, [bent(x, 64) for x in GRID])
    assert abs(fit["knee_x"] - 64) < 1e-6
    assert abs(fit["slope_before"] - 1) < 0.05 and abs(fit["slope_after"] - 2) < 0.05
    assert fit["rss"] < 1e-20 and fit["r2"] == 1.0 and fit["improvement"] > 0.99
    assert abs(fit["single_slope"] - 1.5) < 1e-9  # half the points on each slope
    assert [round(y, 6) for y in predict_segmented(fit, [8, 64, 512])] == [8, 64, 4096]


def test_knee_between_points_within_one_grid_step_and_order_free():
    ys = [bent(x, 45) for x in GRID]
    fit = segmented_fit(GRID, ys)
    step = math.log(2) / KNEE_GRID_STEPS  # one candidate step inside a doubling
    assert abs(math.log(fit["knee_x"] / 45)) <= step
    assert abs(fit["slope_before"] - 1) < 0.05 and abs(fit["slope_after"] - 2) < 0.05
    shuffled = segmented_fit(list(reversed(GRID)), list(reversed(ys)))
    assert shuffled == fit


def test_straight_line_has_equal_slopes_and_no_improvement():
    fit = segmented_fit(GRID, [3 * x**1.5 for x in GRID])
    assert abs(fit["slope_before"] - 1.5) < 1e-6 and abs(fit["slope_after"] - 1.5) < 1e-6
    assert fit["improvement"] == 0.0 and fit["r2"] == 1.0


def test_fewer_than_three_distinct_points_fit_one_line():
    fit = segmented_fit([1, 2, 2, None, -1], [1, 3, 3, 5, 5])
    assert fit["knee_x"] is None and "single line" in fit["method"] and fit["n_points"] == 3
    assert abs(fit["slope_before"] - math.log2(3)) < 1e-9 and fit["slope_after"] == fit["slope_before"]
    nothing = segmented_fit([4], [1.0])
    assert nothing["knee_x"] is None and nothing["slope_before"] is None and nothing["method"].startswith("no fit")


def test_amdahl_recovers_the_serial_fraction():
    cores = [1, 2, 4, 8, 16]
    fit = amdahl_fit(cores, [10 * (0.2 + 0.8 / n) for n in cores])
    assert abs(fit["serial_fraction"] - 0.2) < 0.01
    assert abs(fit["t1_s"] - 10) < 1e-6 and abs(fit["max_speedup"] - 5) < 0.01
    perfect = amdahl_fit([1, 2, 4], [8, 4, 2])
    assert perfect["serial_fraction"] == 0 and perfect["max_speedup"] == math.inf
    slower = amdahl_fit([1, 2, 4], [1.0, 1.2, 1.3])  # more cores made it slower: clamped to s = 1
    assert slower["serial_fraction"] == 1 and abs(slower["t1_s"] - 3.5 / 3) < 1e-9
    two = amdahl_fit([1, 2, 2], [1.0, 0.6, 0.6])  # 2 parameters through 2 core counts: exact, checks nothing
    assert two["serial_fraction"] is None and "2 core count(s)" in two["method"] and "at least 3" in two["method"]


def test_speedup_and_efficiency_relative_to_smallest_core_count():
    one = speedup_and_efficiency([2, 1], [0.6, 1.0])
    assert one["baseline_cores"] == 1 and one["method"] == "relative to 1 core"
    assert [(p["cores"], round(p["speedup"], 4), round(p["efficiency"], 4)) for p in one["points"]] == [
        (1, 1.0, 1.0),
        (2, 1.6667, 0.8333),
    ]
    no_one = speedup_and_efficiency([2, 4, 8, 8], [5, 3, 2, 2.2])
    assert no_one["baseline_cores"] == 2 and "no 1-core point" in no_one["method"]
    assert [round(p["efficiency"], 4) for p in no_one["points"]] == [1.0, 0.8333, 0.5952]  # 8 cores: median 2.1


def test_bend_scores_peak_on_the_interval_with_the_bend():
    ys = [bent(x, 45) for x in GRID]
    scores = bend_scores(GRID, ys)
    assert [(lo, hi) for lo, hi, _ in scores] == list(zip(GRID[:-1], GRID[1:], strict=True))
    assert max(scores, key=lambda s: s[2])[:2] == (32, 64)
    assert scores[0][2] == 0 and scores[-1][2] < 1e-12  # straight parts explain themselves
    # each point is half-way (in log x) between its neighbours, so its prediction is the mean of their log y
    e32 = abs(math.log(32) - (math.log(16) + math.log(bent(64, 45))) / 2)
    e64 = abs(math.log(bent(64, 45)) - (math.log(32) + math.log(bent(128, 45))) / 2)
    assert (
        abs(scores[1][2] - e32) < 1e-12 and abs(scores[2][2] - (e32 + e64)) < 1e-12 and abs(scores[3][2] - e64) < 1e-12
    )
    assert bend_scores(list(reversed(GRID)), list(reversed(ys))) == scores


def test_bend_scores_edge_cases():
    assert bend_scores([4, 2], [1.0, 3.0]) == [(2.0, 4.0, 0.0)]
    assert bend_scores([2], [1.0]) == []
    assert bend_scores([1, 2, 2, 4], [1, 1.5, 2.5, 4]) == bend_scores([1, 2, 4], [1, math.sqrt(1.5 * 2.5), 4])
    kink = bend_scores([1, 2, 4], [1, 4, 4])  # 2 is predicted at 2 by its neighbours, measured 4: error log 2
    assert [round(s, 12) for _, _, s in kink] == [round(math.log(2), 12)] * 2


def test_three_point_knee_is_no_evidence_of_a_bend():
    # a "knee" an early report drew through three head counts: slopes 0.20 and -0.29, R² 1.000 because it is exact
    fit = segmented_fit([2, 4, 8], [0.100, 0.115, 0.094])
    assert fit["r2"] == 1.0 and fit["p_value"] is None
    assert bend_evidence(fit).startswith("3 distinct positive values; a two-segment fit in log-log has 4 parameters")
    four = segmented_fit([1, 2, 4, 8], [1, 2, 4, 16])  # 4 points: still exact whatever the curve
    assert "4 distinct positive values" in bend_evidence(four) and "at least 5" in bend_evidence(four)


def test_clean_six_point_bend_is_supported_and_noise_is_not():
    xs = [8, 16, 32, 64, 128, 256]
    clean = segmented_fit(xs, [bent(x, 45) for x in xs])
    assert clean["p_value"] < 0.001 and bend_evidence(clean) is None
    # noise around one straight line (slope 1, ±5%): the best knee removes some residual, but not significantly
    wobble = [1.03, 0.96, 1.05, 0.97, 1.02, 0.98]
    noisy = segmented_fit(xs, [x * w for x, w in zip(xs, wobble, strict=True)])
    assert noisy["knee_x"] is not None and noisy["improvement"] > 0
    assert noisy["p_value"] >= 0.05 and bend_evidence(noisy).startswith("two lines fit no better than one: F-test")


def test_f_test_false_alarms_near_the_nominal_rate():
    # straight lines with 5% log-normal noise at 6 and 8 values: how often is a knee called? Searching the knee pushes
    # the rate above the nominal 5% (Davies 1987), keeping it off the end points pulls it down: 3.7% and 4.0% here
    rng = np.random.default_rng(1)
    for values in (6, 8):
        xs = [2**i for i in range(values)]
        noisy = ([x * math.exp(e) for x, e in zip(xs, rng.normal(0, 0.05, values), strict=True)] for _ in range(300))
        calls = [bend_evidence(segmented_fit(xs, ys)) is None for ys in noisy]
        assert 0.01 <= sum(calls) / 300 <= 0.10, (values, sum(calls))


def test_bend_scores_discount_the_noise():
    xs = [1, 2, 4, 8, 16, 32]
    ys = [1, 2, 4 * 1.6, 8, 16, 64]  # a 1.6x outlier at 4, a real bend at 16 (slope 1, then 2)
    plain = bend_scores(xs, ys)
    assert max(plain, key=lambda s: s[2])[:2] == (2, 4)  # without noise the outlier outranks the bend
    noise = [0.02, 0.02, math.log(1.8), 0.02, 0.02, 0.02]  # the outlier's own interval: a factor 1.8 either way
    scored = bend_scores(xs, ys, noise)
    assert max(scored, key=lambda s: s[2])[:2] == (8, 16)
    assert [round(s, 3) for *_, s in scored] == [0.0, 0.0, 0.0, 0.322, 0.322]
    e16 = math.log(2) / 2 - math.sqrt(0.02**2 + 2 * (0.5 * 0.02) ** 2)  # 16's error less its interpolation noise
    assert abs(scored[3][2] - e16) < 1e-12
    assert bend_scores(xs, ys, [0.0] * 6) == plain  # zero noise: the plain scores


def test_knee_f_test_matches_the_tables():
    # F = ((RSS_line - RSS_knee) / 2) / (RSS_knee / (n - 4)); the 5% points of F(2, 3) and F(2, 10): 9.552 and 4.103
    # (Abramowitz & Stegun table 26.9), so p = 0.05 there
    assert knee_f_test(3 + 2 * 9.552, 3.0, 7, 100.0)["p_value"] == pytest.approx(0.05, abs=1e-4)
    assert knee_f_test(10 + 2 * 4.103, 10.0, 14, 100.0)["p_value"] == pytest.approx(0.05, abs=1e-4)
    assert knee_f_test(2.0, 0.0, 7, 100.0) == {"f_statistic": math.inf, "p_value": 0.0}
    assert knee_f_test(1.0, 0.5, 4, 100.0) == {"f_statistic": None, "p_value": None}  # no residual degree of freedom
