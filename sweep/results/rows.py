"""Stored rows as the report and the cross-host comparison read them, the Markdown cells and the plot axes they share.

A row written by an older version lacks some columns: read every column with .get(); NaN becomes None here.
"""

from __future__ import annotations

import json
import math
import re

from sweep.results.store import Store
from trainables.config import format_assignments

LOG_SPAN = 8  # an axis spanning 8x or more (three doublings) reads better on a log scale
MAX_VALUE_TICKS = 12  # up to this many measured values, each is a tick


def latest_sweep(store: Store) -> str:
    columns, _ = store.query("SELECT * FROM trials LIMIT 0")
    when = next((c for c in ("recorded_at", "finished_at", "started_at") if c in columns), None)
    order = f"max({when}) DESC NULLS LAST, " if when else ""
    _, found = store.query(f"SELECT sweep FROM trials GROUP BY sweep ORDER BY {order}sweep DESC LIMIT 1")
    return found[0][0]


def clean_row(row: dict) -> dict:
    row = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
    point = row.get("point")
    if isinstance(point, str):
        try:
            point = json.loads(point)
        except ValueError:
            point = {"point": point}
    row["_point"] = point if isinstance(point, dict) else {}
    row["_ok"] = row.get("status") == "ok" and is_positive(row.get("step_time_median_s"))
    return row


def plan_order(row: dict):
    index = row.get("trial_index")
    return (index is None, index if index is not None else 0, str(row.get("recorded_at") or ""))


def is_positive(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def point_text(row: dict) -> str:
    return format_assignments(row["_point"]) or "baseline"


def study_axes(rows: list[dict]) -> tuple[list[str], list[str]]:
    """(all varied keys in first-seen order, the numeric ones: a number in every row that has the key)."""
    axes = list(dict.fromkeys(k for r in rows for k in r["_point"]))
    numeric = [a for a in axes if all(is_number(r["_point"][a]) for r in rows if a in r["_point"])]
    return axes, numeric


def cell(value) -> str:
    return "" if value is None else re.sub(r"\s+", " ", str(value)).replace("|", "\\|").strip()


def md_table(columns: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows])


def ms(seconds, std=None) -> str:
    if not is_number(seconds) or math.isnan(seconds):
        return ""
    return f"{seconds * 1e3:.1f}" + (f" ± {std * 1e3:.1f}" if is_number(std) and not math.isnan(std) else "")


def study_shape(rows: list[dict]) -> tuple[str, str | None, str | None, list[str], list[dict]]:
    """(kind, x axis, series axis, all axes, rows in display order): 'line' for one numeric axis (rows by value),
    'grid' for two axes of which one is numeric (one line per value of the other), 'bar' for anything else."""
    axes, numeric = study_axes(rows)
    if len(axes) == 1 and numeric:
        x_axis = axes[0]
        rows = sorted(rows, key=lambda r: (r["_point"].get(x_axis) is None, r["_point"].get(x_axis) or 0))
        return "line", x_axis, None, axes, rows
    if len(axes) == 2 and numeric:
        return "grid", numeric[0], next(a for a in axes if a != numeric[0]), axes, rows
    return "bar", None, None, axes, rows


def log_if_wide(ax, xs: list, ys: list) -> None:
    xs, ys = [x for x in xs if is_positive(x)], [y for y in ys if is_positive(y)]
    if xs and max(xs) / min(xs) >= LOG_SPAN:
        ax.set_xscale("log", base=2)
    if 0 < len(set(xs)) <= MAX_VALUE_TICKS:  # the measured values as ticks: '1.2 cores' is no value of the axis
        ax.set_xticks(sorted(set(xs)), [f"{x:g}" for x in sorted(set(xs))])
    if ys and max(ys) / min(ys) >= LOG_SPAN:
        ax.set_yscale("log")
