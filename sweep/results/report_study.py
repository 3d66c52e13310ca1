"""One study's section of the report: its plot, the segmented fit (knee) of a numeric axis where the points support
one, speed-up, efficiency and an Amdahl fit for core counts, the table of every point (median over repeats with its 95%
interval, and the ratio to the study's first value with its interval and verdict: "no measurable effect" where the
interval includes 1.0; sweep/results/stats.py), and the figures of a reference the plan names beside ours.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from sweep.results.fit import amdahl_fit, bend_evidence, segmented_fit, speedup_and_efficiency
from sweep.results.report_plot import plot_study
from sweep.results.report_tables import PROJECTION_STEPS, seconds_and_duration
from sweep.results.rows import (
    data_of,
    interval_ms,
    is_number,
    is_positive,
    md_table,
    ms,
    p_text,
    point_text,
    ratios_to_first,
    study_shape,
    tokens_ratio_text,
    verdict_text,
)
from sweep.results.stats import ratio_to_reference
from sweep.results.store import slug

CORE_AXES = ("cores", "threads")
FLAT_BEND = 0.1  # slopes closer than this in log-log are one straight line within step-time noise


def study_section(study: str, points: list[dict], out: Path, node: str | None = None, pools: dict | None = None) -> str:
    """A study's plot, fits and table; `node`: the points are one node's of a multi-node sweep, named in the title;
    `pools`: each node's pooled paired variance (racing.node_pools), for the ratios' intervals."""
    kind, x_axis, series, axes, points = study_shape(points)
    ok = [p for p in points if p["_ok"] and (x_axis is None or is_number(p["_point"].get(x_axis)))]
    title = f"## Study `{study}`" + (f": {', '.join(axes)}" if axes else "") + (f" on {node}" if node else "")
    text = [title, ""]
    fit = scaling = None
    xs, medians = [p["_point"].get(x_axis) for p in ok], [p["step_time_median_s"] for p in ok]
    if kind == "line" and len(set(xs)) >= 2:
        fit = segmented_fit(xs, medians)
        text += [knee_text(x_axis, fit), ""]
    if kind == "line" and (study == "cores" or x_axis in CORE_AXES):
        scaling = speedup_and_efficiency(xs, medians)
        text += [scaling_text(x_axis, scaling, ok), ""]
    label = study + (f" on {node}" if node else "")
    png = out / f"{slug(study)}{f'-{slug(node)}' if node else ''}.png"
    reference = study_reference(points)
    fitted = fit if fit and bend_evidence(fit) is None else None
    plot_study(png, label, kind, x_axis, series, ok, fitted, scaling, reference)
    text += [f"![{label}]({png.name})", "", study_table(points, axes, pools)]
    if reference:
        text += ["", reference_table(points, reference)]
    return "\n".join(text)


def study_table(points: list[dict], axes: list[str], pools: dict | None = None) -> str:
    """Every point of the study: its median over repeats with the interval, and its ratio to the study's first ok point
    (the smallest value of a numeric axis, else plan order) with the ratio's interval and verdict."""
    ratios = ratios_to_first(points, pools)
    first = next((p for p in points if p["_ok"]), None)
    several_data = len({data_of(p) for p in points}) > 1  # the hub's text and the offline corpus: two points
    table = []
    for p, ratio in zip(points, ratios, strict=True):
        tok, ok = p.get("tokens_per_s"), p["_ok"]
        table.append(
            [p["_point"].get(a) for a in axes]
            + ([data_of(p)] if several_data else [])
            + [
                phase_text(p),
                p.get("status"),
                ms(p["step_time_median_s"]) if ok else "",
                interval_ms(p["_estimate"]),
                len(p["_repeats"]) if ok else "",
                f"{p['step_time_cv']:.1%}" if ok and is_number(p.get("step_time_cv")) else "",
                f"{tok:,.0f}" if ok and is_number(tok) else "",
                ratio.text() if ratio else "",
                tokens_ratio_text(p, first, ratio) if ratio else "",
                verdict_text(p, first, ratio) if ratio else "",
                str(p.get("error") or "")[:80],
            ]
        )
    columns = (axes or ["point"]) + (["data"] if several_data else [])
    columns += ["phase", "status", "median ms", "95% CI ms", "repeats", "CV", "tokens/s"]
    columns += ["step time vs first (95% CI)", "tokens/s vs first (95% CI)", "verdict", "reason"]
    if not axes:
        table = [["baseline", *t] for t in table]
    return md_table(columns, table)


def phase_text(row: dict) -> str:
    bend = row.get("bend_score")
    return (row.get("phase") or "grid") + (f" (bend score {bend:.3g})" if is_number(bend) else "")


def knee_text(axis: str, fit: dict) -> str:
    """The knee where the points support one (sweep/results/fit.py `bend_evidence`), else why there is none."""
    why = bend_evidence(fit)
    if why is not None:
        slope = fit["single_slope"]
        line = "" if slope is None else f" One straight line in log-log over the positive {axis} values: slope "
        line += "" if slope is None else f"{slope:.2f} (step time ∝ {axis}^{slope:.2f})."
        return f"**No evidence of a bend** ({why}).{line}"
    before, after = fit["slope_before"], fit["slope_after"]
    text = (
        f"**Knee** (segmented fit of the medians over repeats, two straight lines in log-log over {fit['n_points']} "
        f"points): {axis} ≈ {fit['knee_x']:.4g}, slope {before:.2f} before and {after:.2f} after (step time ∝ "
        f"{axis}^slope; R² {fit['r2']:.3f}; one line has slope {fit['single_slope']:.2f}, the knee removes "
        f"{fit['improvement']:.0%} of its residual; F-test against one line: {p_text(fit['p_value'])})."
    )
    if abs(after - before) < FLAT_BEND:
        text += " The slopes barely differ: no clear bend."
    return text


def scaling_text(axis: str, scaling: dict, ok: list[dict]) -> str:
    """Speed-up (with its interval: the base point's step time over this one's) and efficiency; Amdahl's fit."""
    amdahl = amdahl_fit([p["_point"][axis] for p in ok], [p["step_time_median_s"] for p in ok])
    at = {p["_point"][axis]: p["_estimate"] for p in reversed(ok)}  # the first point of each core count
    base = at[scaling["baseline_cores"]]
    table = []
    for p in scaling["points"]:
        speedup = ratio_to_reference(base, at[p["cores"]])
        verdict = "reference" if p["cores"] == scaling["baseline_cores"] else speedup.verdict("faster", "slower")
        interval = f"{speedup.low:.2f}–{speedup.high:.2f}" if speedup.low is not None and verdict != "reference" else ""
        table.append(
            [p["cores"], ms(p["step_time_s"]), f"{p['speedup']:.2f}x", interval, f"{p['efficiency']:.0%}", verdict]
        )
    columns = [axis, "median step ms", "speed-up", "95% CI", "parallel efficiency", "verdict"]
    if amdahl["serial_fraction"] is None:
        fit_line = f"**No Amdahl fit** ({amdahl['method'].removeprefix('no fit: ')})."
    else:
        top = "unbounded" if math.isinf(amdahl["max_speedup"]) else f"{amdahl['max_speedup']:.2f}x"
        fit_line = (
            f"**Amdahl fit** of the medians over repeats: serial fraction s = {amdahl['serial_fraction']:.3f}, "
            f"T1 = {ms(amdahl['t1_s'])} ms, speed-up limit 1/s = {top} ({amdahl['method']})."
        )
    return f"Speed-up and parallel efficiency ({scaling['method']}):\n\n{md_table(columns, table)}\n\n{fit_line}"


def study_reference(points: list[dict]) -> dict | None:
    """The figure the plan says this study reproduces (column `reference`), or None."""
    for p in points:
        for r in p["_rows"]:
            value = r.get("reference")
            if value:
                return json.loads(value) if isinstance(value, str) else value
    return None


REFERENCE_FIGURES = {  # plan figure -> (label, our column, format)
    "step_time_s": ("step time (s)", "step_time_median_s", "{:.3g}"),
    "projected_10k_steps_s": ("10,000 steps", "projected_10k_steps_s", None),
    "tokens_per_s": ("tokens/s", "tokens_per_s", "{:,.1f}"),
    "mfu": ("MFU", "mfu", "{:.1%}"),
}


def reference_table(points: list[dict], reference: dict) -> str:
    """Ours beside the reference's figures, per ok point: the medians over repeats, and ours / theirs."""
    rows = []
    for p in (p for p in points if p["_ok"]):
        ours_by_figure = {
            "step_time_s": p["step_time_median_s"],
            "projected_10k_steps_s": PROJECTION_STEPS * p["step_time_median_s"],
            "tokens_per_s": p.get("tokens_per_s"),
            "mfu": median_column(p, "mfu"),
        }
        for figure, theirs in reference.items():
            if figure not in REFERENCE_FIGURES:
                continue
            name, _, fmt = REFERENCE_FIGURES[figure]
            ours = ours_by_figure[figure]
            show = (lambda v: seconds_and_duration(v)) if fmt is None else fmt.format
            ratio = f"{ours / theirs:.2f}x" if is_positive(ours) else ""
            rows.append([point_text(p), name, show(ours) if is_positive(ours) else "", show(theirs), ratio])
    note = f" {reference['note']}" if reference.get("note") else ""
    intro = f"**Reference: {reference['label']}.**{note} Ours are this sweep's medians over repeats."
    columns = ["point", "figure", "ours", f"reference ({reference['label']})", "ours / reference"]
    return intro + "\n\n" + (md_table(columns, rows) if rows else "No ok point to compare.")


def median_column(point: dict, column: str) -> float | None:
    values = [r[column] for r in point["_repeats"] if is_positive(r.get(column))]
    return statistics.median(values) if values else None
