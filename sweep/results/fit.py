"""Fitting timing curves: where step time against an axis bends (segmented log-log fit), how it scales with cores
(Amdahl), and which interval between measured points is worst explained (where refinement should add a point).

Every function takes plain sequences, ignores points that cannot be placed on a log-log plot (None, NaN, <= 0), is
deterministic, and returns plain Python numbers so results can go straight into a row, a table or JSON.

The least squares are NumPy's (`polyfit`, `lstsq`) and SciPy's (`optimize.nnls` for Amdahl, `stats.f` for the F-test);
the knee search is a grid of its own because neither library has segmented regression with a free, continuous corner
(`scipy.optimize.curve_fit` on a hinge is a local search whose answer depends on its start, and the residual is not
smooth in the knee).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize, stats

# Candidate knees between two neighbouring measured points: a grid step of 1/20 of the log interval (3.5 % for a
# doubling) is finer than the run-to-run noise of a step time, so a finer grid would only chase noise.
KNEE_GRID_STEPS = 20
# A continuous two-segment line in log-log has 4 parameters (intercept, two slopes, knee): with 4 points it passes
# through every one of them, so it takes at least 5 distinct values before the fit can be wrong and the test mean much.
KNEE_PARAMETERS = 4
LINE_PARAMETERS = 2
MIN_KNEE_VALUES = KNEE_PARAMETERS + 1
KNEE_P_VALUE = 0.05
# Amdahl's T(n) = T1 * (s + (1 - s)/n) has 2 parameters: 2 core counts are fitted exactly, which checks nothing.
MIN_AMDAHL_CORE_COUNTS = 3


def _loglog(xs, ys) -> tuple[np.ndarray, np.ndarray]:
    """log x, log y of the usable points, sorted by x (stable, so ties keep their input order)."""
    pairs = [(float(x), float(y)) for x, y in zip(xs, ys, strict=True) if _positive(x) and _positive(y)]
    pairs.sort(key=lambda p: p[0])
    if not pairs:
        return np.empty(0), np.empty(0)
    arr = np.log(np.array(pairs))
    return arr[:, 0], arr[:, 1]


def _positive(value) -> bool:
    try:
        return value is not None and math.isfinite(float(value)) and float(value) > 0
    except (TypeError, ValueError):
        return False


def _hinge_lstsq(lx: np.ndarray, ly: np.ndarray, knee: float) -> tuple[np.ndarray, float]:
    """Continuous two-segment line with its corner at `knee`: ly = a + b1*min(lx-knee, 0) + b2*max(lx-knee, 0)."""
    d = lx - knee
    basis = np.column_stack([np.ones_like(lx), np.minimum(d, 0.0), np.maximum(d, 0.0)])
    coef = np.linalg.lstsq(basis, ly, rcond=None)[0]
    resid = ly - basis @ coef
    return coef, float(resid @ resid)


def _r2(ly: np.ndarray, rss: float) -> float:
    sst = float(((ly - ly.mean()) ** 2).sum())
    return 1.0 if sst <= 1e-300 else 1.0 - rss / sst


def segmented_fit(xs, ys) -> dict:
    """Two straight lines in log-log space, joined at the knee, by least squares.

    Candidate knees are every interior distinct x and a grid of KNEE_GRID_STEPS per interval between them; the knee
    stays between the second and the second-to-last distinct x so each segment is fitted to at least two points.
    Slopes are log-log exponents (1 = time grows in proportion to x). `improvement` is the share of a single line's
    residual the knee removes: near 0 means the curve is straight and the knee location means little.
    `anchor_x`/`anchor_y` is a point the fitted line passes through (the knee, or the centroid of a single line), so
    `predict_segmented` can draw it.
    """
    lx, ly = _loglog(xs, ys)
    distinct = np.unique(lx)
    result = {
        "knee_x": None,
        "knee_y": None,
        "slope_before": None,
        "slope_after": None,
        "rss": 0.0,
        "r2": None,
        "n_points": int(lx.size),
        "single_slope": None,
        "improvement": 0.0,
        "anchor_x": None,
        "anchor_y": None,
        "distinct_x": int(distinct.size),
        "f_statistic": None,
        "p_value": None,
    }
    if distinct.size < 2:
        return result | {"method": f"no fit: {distinct.size} distinct positive x value(s), a line needs 2"}
    slope, intercept = np.polyfit(lx, ly, 1)
    single_rss = float(((ly - (intercept + slope * lx)) ** 2).sum())
    cx, cy = float(lx.mean()), float(intercept + slope * lx.mean())
    single = {
        "slope_before": float(slope),
        "slope_after": float(slope),
        "single_slope": float(slope),
        "rss": single_rss,
        "r2": _r2(ly, single_rss),
        "anchor_x": math.exp(cx),
        "anchor_y": math.exp(cy),
    }
    if distinct.size < 3:
        return result | single | {"method": f"single line in log-log ({distinct.size} distinct x, a knee needs 3)"}

    sst = float(((ly - ly.mean()) ** 2).sum())
    inner = distinct[1:-1]
    grid = [np.linspace(a, b, KNEE_GRID_STEPS, endpoint=False) for a, b in zip(inner[:-1], inner[1:], strict=True)]
    candidates = np.unique(np.concatenate([*grid, inner]))
    fits = [(_hinge_lstsq(lx, ly, k), k) for k in candidates]
    best = min(range(len(fits)), key=lambda i: fits[i][0][1])  # min() keeps the first of equal RSS: deterministic
    (coef, rss), knee = fits[best]
    exact = " (3 distinct x: the fit is exact)" if distinct.size == 3 else ""
    return (
        result
        | {
            "knee_x": math.exp(knee),
            "knee_y": math.exp(coef[0]),
            "slope_before": float(coef[1]),
            "slope_after": float(coef[2]),
            "rss": rss,
            "r2": _r2(ly, rss),
            "single_slope": float(slope),
            # a single line that already fits to rounding leaves nothing for the knee to explain
            "improvement": 0.0 if single_rss <= 1e-12 * sst + 1e-24 else max(0.0, 1.0 - rss / single_rss),
            "anchor_x": math.exp(knee),
            "anchor_y": math.exp(coef[0]),
            "method": f"two-segment continuous least squares in log-log, {candidates.size} candidate knees{exact}",
        }
        | knee_f_test(single_rss, rss, int(lx.size), sst)
    )


def knee_f_test(line_rss: float, knee_rss: float, n_points: int, sst: float) -> dict:
    """Is the two-segment fit significantly better than one straight line? The F-test of nested least-squares models:
    F = ((RSS_line - RSS_knee) / (4 - 2)) / (RSS_knee / (n - 4)), p = P(F(2, n - 4) > F).

    The knee is chosen to minimise RSS_knee, so the nominal p is somewhat optimistic (Davies 1987, Biometrika 74);
    charging the knee a full degree of freedom, as here, is the usual allowance (Hudson 1966, JASA 61). None where
    n - 4 leaves no residual degree of freedom.
    """
    residual_df = n_points - KNEE_PARAMETERS
    if residual_df <= 0:
        return {"f_statistic": None, "p_value": None}
    gain = max(0.0, line_rss - knee_rss) / (KNEE_PARAMETERS - LINE_PARAMETERS)
    if line_rss <= 1e-12 * sst + 1e-24:  # one straight line already fits to rounding: no bend to find
        return {"f_statistic": 0.0, "p_value": 1.0}
    if knee_rss <= 1e-12 * line_rss:  # the knee fits exactly and the line does not
        return {"f_statistic": math.inf, "p_value": 0.0}
    f = gain / (knee_rss / residual_df)
    return {"f_statistic": f, "p_value": float(stats.f.sf(f, KNEE_PARAMETERS - LINE_PARAMETERS, residual_df))}


def bend_evidence(fit: dict) -> str | None:
    """None where the points support a knee; else why not, in words for the report."""
    if fit["distinct_x"] < MIN_KNEE_VALUES:
        return (
            f"{fit['distinct_x']} distinct positive values; a two-segment fit in log-log has {KNEE_PARAMETERS} "
            f"parameters (intercept, two slopes, knee) and passes through any {KNEE_PARAMETERS} points, so it needs "
            f"at least {MIN_KNEE_VALUES}"
        )
    if fit["p_value"] is None or fit["knee_x"] is None:
        return f"{fit['n_points']} points leave no residual to test a knee against"
    if fit["p_value"] >= KNEE_P_VALUE:
        return (
            f"two lines fit no better than one: F-test F = {fit['f_statistic']:.2f}, p = {fit['p_value']:.2f} "
            f"≥ {KNEE_P_VALUE}"
        )
    return None


def predict_segmented(fit: dict, xs) -> list[float]:
    """y of the fitted segmented line at each x (for plotting); NaN where there is no fit."""
    if fit.get("anchor_x") is None:
        return [math.nan for _ in xs]
    ax, ay = math.log(fit["anchor_x"]), math.log(fit["anchor_y"])
    out = []
    for x in xs:
        d = math.log(x) - ax
        out.append(math.exp(ay + (fit["slope_before"] if d <= 0 else fit["slope_after"]) * d))
    return out


def amdahl_fit(cores, step_times) -> dict:
    """Least-squares T(n) = T1 * (s + (1 - s)/n), with s in [0, 1].

    Written as T(n) = A + B/n (A = T1*s, B = T1*(1-s)) the model is linear, so s in [0, 1] is A, B >= 0: non-negative
    least squares (Lawson & Hanson 1974, "Solving Least Squares Problems", ch. 23; `scipy.optimize.nnls`).
    """
    pairs = [(float(n), float(t)) for n, t in zip(cores, step_times, strict=True) if _positive(n) and _positive(t)]
    counts = len({n for n, _ in pairs})
    if counts < MIN_AMDAHL_CORE_COUNTS:
        return {
            "serial_fraction": None,
            "t1_s": None,
            "max_speedup": None,
            "rss": None,
            "method": f"no fit: {counts} core count(s); T1 and s are 2 parameters, which {counts} points fit exactly "
            f"without checking the model, so the fit needs at least {MIN_AMDAHL_CORE_COUNTS}",
        }
    inv = np.array([1.0 / n for n, _ in pairs])
    t = np.array([t for _, t in pairs])
    a, b = (float(v) for v in optimize.nnls(np.column_stack([np.ones_like(inv), inv]), t)[0])
    rss = float(((t - (a + b * inv)) ** 2).sum())
    s = a / (a + b)
    s = 0.0 if s < 1e-9 else s  # rounding of a perfect fit would read as a speed-up limit of 1e15 instead of none
    return {
        "serial_fraction": s,
        "t1_s": a + b,
        "max_speedup": math.inf if s == 0 else 1.0 / s,
        "rss": rss,
        "method": f"least squares of T(n) = T1*(s + (1-s)/n) over {len(pairs)} points, s constrained to [0, 1]",
    }


def speedup_and_efficiency(cores, step_times) -> dict:
    """Speed-up T(base)/T(n) and efficiency speed-up / (n/base) per core count, base = 1 core if measured.

    Repeated core counts use their median step time. Without a 1-core point the base is the smallest core count
    present, which `method` states: efficiency is then relative to that count, not to one core.
    """
    by_cores: dict[int, list[float]] = {}
    for n, t in zip(cores, step_times, strict=True):
        if _positive(n) and _positive(t):
            by_cores.setdefault(int(n), []).append(float(t))
    if not by_cores:
        return {"baseline_cores": None, "points": [], "method": "no usable (cores, step time) points"}
    medians = {n: float(np.median(ts)) for n, ts in sorted(by_cores.items())}
    base = min(medians)
    points = [
        {"cores": n, "step_time_s": t, "speedup": medians[base] / t, "efficiency": medians[base] / t / (n / base)}
        for n, t in medians.items()
    ]
    method = "relative to 1 core" if base == 1 else f"relative to {base} cores (no 1-core point measured)"
    return {"baseline_cores": base, "points": points, "method": method}


def bend_scores(xs, ys, noise=None) -> list[tuple[float, float, float]]:
    """How badly the measured curve is explained inside each interval between neighbouring distinct x.

    Each interior point is predicted from its two neighbours by straight-line interpolation in log-log space, and its
    error is |log y - predicted log y| (0.1 = the point is about 10 % off a power law through its neighbours).
    An interval's score is the sum of the errors of its two end points (an end point of the whole curve counts 0),
    so the interval between two points that both sit off the line - the one the bend lies in - scores highest.
    Input may be unsorted; repeated x are averaged in log space; points that are None, NaN or <= 0 are ignored; with
    exactly 2 usable x the single interval scores 0, with fewer the list is empty.

    noise (optional, one per x): each point's 95% half-width in log space (0.1: its interval spans about ±10 %). An
    error then counts only beyond what the noise of the three points it compares explains, added in quadrature as
    independent errors: sqrt(h_i^2 + (1-w)^2 h_left^2 + w^2 h_right^2) for the interpolation weight w. A point off the
    line by less than that is within the noise and scores 0, so an interval between noisy points never outranks a
    real bend.
    """
    by_x: dict[float, list[float]] = {}
    width_at: dict[float, list[float]] = {}
    for x, y, h in zip(xs, ys, noise if noise is not None else [0.0] * len(xs), strict=True):
        if _positive(x) and _positive(y):
            by_x.setdefault(float(x), []).append(math.log(float(y)))
            width_at.setdefault(float(x), []).append(float(h or 0.0))
    ux = sorted(by_x)
    lx = [math.log(x) for x in ux]
    ly = [sum(v) / len(v) for v in (by_x[x] for x in ux)]
    # the mean of k repeated values: its half-width shrinks by sqrt(k)
    half = [sum(v) / len(v) / math.sqrt(len(v)) for v in (width_at[x] for x in ux)]
    errors = [0.0] * len(ux)
    for i in range(1, len(ux) - 1):
        w = (lx[i] - lx[i - 1]) / (lx[i + 1] - lx[i - 1])
        error = abs(ly[i] - (ly[i - 1] + w * (ly[i + 1] - ly[i - 1])))
        within = math.sqrt(half[i] ** 2 + ((1 - w) * half[i - 1]) ** 2 + (w * half[i + 1]) ** 2)
        errors[i] = max(0.0, error - within)
    return [(ux[i], ux[i + 1], errors[i] + errors[i + 1]) for i in range(len(ux) - 1)]
