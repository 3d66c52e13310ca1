"""Confidence intervals of step times: coverage of the hierarchical bootstrap, ratios and their verdicts, drift of the
control point, and the small-sample expansion of the intervals."""

import math

import numpy as np
import pytest

from sweep.results.stats import (
    NO_MEASURABLE_EFFECT,
    RESAMPLES,
    STEPS_ONLY,
    control_drift,
    expansion,
    point_estimate,
    ratio_to_reference,
    resampled_medians,
)


def synthetic_point(rng, repeats: int, level: float = 1.0, trial_shift=0.15, step_noise=0.10, steps=30):
    """Repeats as on the VMs: each trial's level is lognormal around `level` (sigma trial_shift), its steps lognormal
    around that (sigma step_noise). The true median of a repeat's median is `level`."""
    out = []
    for shift in rng.normal(0, trial_shift, repeats):
        times = level * math.exp(shift) * np.exp(rng.normal(0, step_noise, steps))
        out.append((float(np.median(times)), times.tolist()))
    return out


@pytest.mark.parametrize("repeats", [3, 5])
def test_interval_covers_the_true_median_at_about_the_nominal_rate(repeats):
    rng = np.random.default_rng(2025)
    estimates = [point_estimate(synthetic_point(rng, repeats), f"p{i}") for i in range(200)]
    coverage = sum(e.low_s <= 1.0 <= e.high_s for e in estimates) / 200
    assert 0.90 <= coverage <= 0.99, coverage
    assert all(e.repeats == repeats and e.samples.shape == (RESAMPLES,) for e in estimates)


def test_one_repeat_resamples_its_steps_only():
    rng = np.random.default_rng(7)
    (median, steps) = synthetic_point(rng, 1, trial_shift=0.0)[0]
    estimate = point_estimate([(median, steps)], "one")
    assert estimate.method == STEPS_ONLY and estimate.steps_only and "ignores between-trial variation" in STEPS_ONLY
    assert estimate.low_s < median < estimate.high_s
    # the median of 30 steps of 10% noise: standard error about 1.25 * 0.10 / sqrt(30) = 2.3%, so about ±4.5%
    assert 0.03 < estimate.log_half_width < 0.07
    bare = point_estimate([(0.2, None)], "old row")  # a row from before step_times_s: nothing to resample
    assert bare.median_s == 0.2 and bare.low_s is None and "no interval" in bare.method


def test_between_trial_shifts_widen_the_interval():
    # the same per-step noise; trials shifting level by 20% must give a wider interval than trials that do not
    rng = np.random.default_rng(3)
    steady = point_estimate(synthetic_point(rng, 5, trial_shift=0.0), "steady")
    shifting = point_estimate(synthetic_point(rng, 5, trial_shift=0.2), "shifting")
    assert shifting.log_half_width > 2 * steady.log_half_width


def test_the_same_rows_give_the_same_interval():
    rng = np.random.default_rng(4)
    repeats = synthetic_point(rng, 3)
    assert point_estimate(repeats, "a") == point_estimate(repeats, "a")
    assert point_estimate(repeats[::-1], "a") == point_estimate(repeats, "a")  # the store returns rows in any order
    assert point_estimate(repeats, "a").low_s != point_estimate(repeats, "b").low_s  # every point draws its own


def test_equal_points_show_no_measurable_effect():
    # the "relu 1.29x slower than gelu": two points from one distribution, 3 repeats each
    rng = np.random.default_rng(12)
    gelu = point_estimate(synthetic_point(rng, 3), "gelu")
    relu = point_estimate(synthetic_point(rng, 3), "relu")
    ratio = ratio_to_reference(relu, gelu)
    assert ratio.low < 1.0 < ratio.high and ratio.measurable is False
    assert ratio.verdict() == NO_MEASURABLE_EFFECT
    calls = 0  # over 100 such pairs, about 5% (the nominal rate) or fewer may be called an effect
    for i in range(100):
        a, b = point_estimate(synthetic_point(rng, 3), f"a{i}"), point_estimate(synthetic_point(rng, 3), f"b{i}")
        calls += ratio_to_reference(a, b).measurable
    assert calls <= 8


def test_a_real_effect_is_measurable():
    rng = np.random.default_rng(5)
    base = point_estimate(synthetic_point(rng, 3, trial_shift=0.03, step_noise=0.03), "base")
    slow = point_estimate(synthetic_point(rng, 3, level=1.5, trial_shift=0.03, step_noise=0.03), "slow")
    ratio = ratio_to_reference(slow, base)
    assert ratio.value == pytest.approx(1.5, rel=0.05) and 1.0 < ratio.low < 1.5 < ratio.high < 2.0
    assert ratio.verdict() == "slower" and ratio_to_reference(base, slow).verdict() == "faster"
    assert ratio.text() == f"{ratio.value:.2f}x ({ratio.low:.2f}–{ratio.high:.2f})"
    # one repeat each: still an effect, flagged as resting on steps only
    slow_once = point_estimate([(1.5, [1.45, 1.47, 1.5, 1.52, 1.55])], "slow once")
    base_once = point_estimate([(1.0, [0.97, 0.99, 1.0, 1.01, 1.03])], "base once")
    assert ratio_to_reference(slow_once, base_once).verdict() == "slower (1 repeat: steps only)"
    assert ratio_to_reference(point_estimate([(1.5, None)], "x"), base).verdict() == "no interval"


def test_resampled_medians_match_resampling_the_steps():
    # the order-statistic shortcut draws what resampling and taking the median draws, for odd and even counts
    rng = np.random.default_rng(6)
    for n in (9, 10):
        steps = rng.lognormal(0, 0.1, n)
        fast = resampled_medians(steps, 100_000, rng)
        slow = np.median(steps[rng.integers(0, n, (100_000, n))], axis=1)
        quantiles = [0.025, 0.25, 0.5, 0.75, 0.975]
        assert np.quantile(fast, quantiles) == pytest.approx(np.quantile(slow, quantiles), rel=0.01)
        assert fast.std() == pytest.approx(slow.std(), rel=0.03)


def test_drift_of_the_control_point():
    rng = np.random.default_rng(8)

    def repeat(level):
        times = level * np.exp(rng.normal(0, 0.03, 40))
        return float(np.median(times)), times.tolist()

    steady = control_drift([repeat(1.0) for _ in range(4)])
    assert steady.within_noise and steady.p_value >= 0.05 and 1.0 <= steady.spread < 1.05
    drifting = control_drift([repeat(level) for level in (1.0, 1.05, 1.12, 1.25)])
    assert drifting.within_noise is False and drifting.p_value < 0.01
    assert drifting.spread == pytest.approx(1.25, rel=0.03) and drifting.low < drifting.spread < drifting.high
    assert control_drift([(1.0, None), (1.2, None)]).within_noise is None  # old rows: no steps, no test


def test_expansion_is_hesterbergs_factor_with_welch_degrees_of_freedom():
    # sqrt(R/(R-1)) * t(0.975, df) / z(0.975), t(0.975) for 2 and 4 df: 4.303 and 2.776 (Abramowitz & Stegun table 26.10)
    deviations = np.array([-1.0, 1.0])
    assert expansion([(deviations, 3)]) == pytest.approx(math.sqrt(3 / 2) * 4.303 / 1.960, rel=1e-3)
    # two estimates of 3 repeats with equal spread: Welch-Satterthwaite gives 4 degrees of freedom
    assert expansion([(deviations, 3), (deviations, 3)]) == pytest.approx(math.sqrt(3 / 2) * 2.776 / 1.960, rel=1e-3)
    assert expansion([(deviations, 1)]) == 1.0  # steps only: many steps, no expansion
    assert expansion([(np.zeros(4), 3)]) == 1.0  # no spread to widen
