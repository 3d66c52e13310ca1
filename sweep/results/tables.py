"""Plain-text tables for the terminal: query results and the per-study summary."""

from __future__ import annotations

import math

from sweep.results.racing import node_pools
from sweep.results.rows import (
    clean_row,
    interval_ms,
    is_control,
    is_number,
    plan_order,
    point_rows,
    point_text,
    ratios_to_first,
    step_times,
    study_shape,
    verdict_text,
)
from sweep.results.stats import control_drift
from sweep.results.store import Store


# Our own: pandas' DataFrame.to_string right-aligns, prints an index and draws no rule under the header, and its
# to_markdown needs tabulate, which is no dependency
def format_table(columns: list[str], rows: list[tuple]) -> str:
    def cell(value) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in text)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in text]
    return "\n".join(lines)


def study_summary(store: Store, sweep_id: str) -> str:
    """Per study: each point's median step time over its repeats with its 95% interval and the number of repeats,
    tokens/s, and the ratio to the study's first value with its interval and verdict ("no measurable effect" where the
    interval includes 1.0); the control study adds whether the machine drifted beyond the noise."""
    rows = [clean_row(r) for r in store.rows(sweep_id)]
    if not rows:
        return f"sweep {sweep_id}: no rows"
    several_nodes = len({r.get("node") for r in rows}) > 1
    by_study: dict[str, list[dict]] = {}
    for row in sorted(rows, key=plan_order):
        where = f" on {row.get('host')} ({row.get('node')})" if several_nodes else ""
        by_study.setdefault(f"{row['study']}{where}", []).append(row)
    blocks, pools = [], node_pools(rows)
    for study, study_rows in by_study.items():
        points = study_shape(point_rows(study_rows))[-1]
        columns = [
            "point",
            "step ms (median)",
            "95% CI",
            "repeats",
            "tokens/s",
            "vs first (95% CI)",
            "verdict / reason",
        ]
        block = f"study {study}\n" + format_table(columns, summary_lines(points, pools))
        control = [p for p in points if p["_ok"] and is_control(p)]
        blocks.append(block + "".join(f"\n{drift_line(p['_repeats'])}" for p in control))
    return "\n\n".join(blocks)


def summary_lines(points: list[dict], pools: dict | None = None) -> list[tuple]:
    first = next((p for p in points if p["_ok"]), None)
    lines = []
    for point, ratio in zip(points, ratios_to_first(points, pools), strict=True):
        ok, error = point["_ok"], str(point.get("error") or "")[:60]
        lines.append(
            (
                point_text(point),
                f"{point['step_time_median_s'] * 1e3:.1f}" if ok else point.get("status"),
                interval_ms(point["_estimate"]),
                len(point["_repeats"]) if ok else "",
                f"{point['tokens_per_s']:,.0f}" if ok and is_number(point.get("tokens_per_s")) else "",
                ratio.text() if ratio else "",
                "; ".join(x for x in (verdict_text(point, first, ratio) if ratio else "", error) if x),
            )
        )
    return lines


def drift_line(repeats: list[dict]) -> str:
    """The Drift section's verdict in one terminal line (sweep/results/report_drift.py has the whole section)."""
    if len(repeats) < 2:
        return "drift: one control repeat, drift needs at least 2"
    drift = control_drift([(r["step_time_median_s"], step_times(r)) for r in repeats])
    measured = f"drift: the control's {len(repeats)} repeats differ by {drift.spread:.2f}x (max/min"
    if drift.within_noise is None:
        return f"{measured}); not tested, some repeats lack their per-step times"
    where = "within" if drift.within_noise else "beyond"
    return (
        f"{measured}, 95% CI {drift.low:.2f}–{drift.high:.2f}x): {where} the per-step noise (p = {drift.p_value:.3f})"
    )
