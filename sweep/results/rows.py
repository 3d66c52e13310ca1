"""Stored rows as the report and the cross-host comparison read them, the Markdown cells and the plot axes they share.

A row written by an older version lacks some columns: read every column with .get(); NaN becomes None here.

A point is what was measured: rows with the same node, study, config_key and data (see `data_of`) are repeats of one
point (`repeat` 0, 1, ...; rows without the column count as repeat 0). `point_rows` folds them into one dict that reads
like a row: its step time is the median over the ok repeats, with the 95% interval of sweep/results/stats.py.
"""

from __future__ import annotations

import json
import math
import re
import statistics

from sweep.results.paired import Pooled, differences, interval
from sweep.results.stats import CONFIDENCE, NO_MEASURABLE_EFFECT, Estimate, Ratio, point_estimate, ratio_to_reference
from sweep.results.store import Store
from trainables.config import format_assignments

CONTROL = "control"  # the study (and phase) of the baseline re-measured through the sweep to expose drift
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


def is_control(row: dict) -> bool:
    return row.get("study") == CONTROL or row.get("phase") == CONTROL


def data_of(row: dict) -> str:
    """The text a trial trained on: NAME of dataset_source 'hub:NAME', 'hub-cache:NAME' or 'offline:NAME'. The hub
    and its local cache hold the same text, so their rows are repeats of one point; the offline corpus is other text,
    so its rows are another point. '' for rows that predate the column."""
    return str(row.get("dataset_source") or "").split(":", 1)[-1]


def point_identity(row: dict) -> tuple[str, str, str, str]:
    return (str(row.get("node") or ""), str(row.get("study")), str(row.get("config_key")), data_of(row))


def time_order(row: dict):
    return (str(row.get("recorded_at") or ""), row.get("repeat") or 0)


def step_times(row: dict) -> list[float] | None:
    steps = row.get("step_times_s")
    return [float(s) for s in steps] if isinstance(steps, list | tuple) and len(steps) else None


def estimate_of(repeats: list[dict], identity: str) -> Estimate:
    return point_estimate([(r["step_time_median_s"], step_times(r)) for r in repeats], identity)


def point_rows(rows: list[dict]) -> list[dict]:
    """One dict per point, in the order of each point's first row: its first ok row's columns (plan bookkeeping,
    phase, point) with the measured ones replaced by the medians over its ok repeats; "_rows" holds every row of the
    point, "_repeats" its ok rows in time order, "_estimate" the step time's Estimate (None without an ok repeat)."""
    grouped: dict[tuple, list[dict]] = {}
    for r in rows:
        grouped.setdefault(point_identity(r), []).append(r)
    points = []
    for identity, members in grouped.items():
        repeats = sorted((r for r in members if r["_ok"]), key=time_order)
        first = next((r for r in members if r["_ok"]), members[0])
        point = first | {"_rows": members, "_repeats": repeats, "_ok": bool(repeats), "_estimate": None}
        if repeats:
            point |= _medians_over(repeats, "/".join(identity))
        failed = [r for r in members if not r["_ok"]]
        if repeats and failed:
            point["status"] = f"ok {len(repeats)} of {len(members)}"
        point["error"] = "; ".join(dict.fromkeys(str(r.get("error")) for r in failed if r.get("error"))) or None
        points.append(point)
    return points


def _medians_over(repeats: list[dict], identity: str) -> dict:
    def median_of(column: str):
        values = [r[column] for r in repeats if is_number(r.get(column))]
        return statistics.median(values) if values else None

    estimate = estimate_of(repeats, identity)
    return {
        "_estimate": estimate,
        "step_time_median_s": estimate.median_s,
        "tokens_per_s": median_of("tokens_per_s"),
        "step_time_cv": median_of("step_time_cv"),
        "projected_10k_steps_s": None,  # 10,000 x the median over repeats, computed where it is shown
    }


def ratios_to_first(points: list[dict], pools: dict[str, Pooled | None] | None = None) -> list[Ratio | None]:
    """Each ok point's step time over the first ok point's (the study's reference), with its interval: paired by
    round with the node's pooled variance (`pools`: node -> racing.node_pools) where both are grid points measured in a
    common round, else the hierarchical bootstrap of the two points' repeats."""
    first = next((p for p in points if p["_ok"]), None)
    reference = Ratio(1.0, None, None, False)  # no interval: the reference against itself is 1 by definition
    return [(reference if p is first else ratio_of(p, first, pools)) if p["_ok"] else None for p in points]


def ratio_of(point: dict, reference: dict, pools: dict[str, Pooled | None] | None) -> Ratio:
    pool = (pools or {}).get(str(point.get("node") or ""))
    ours, theirs = round_trials(point), round_trials(reference)
    diffs = differences(ours, theirs) if pool is not None and ours and theirs else []
    if diffs:
        value, low, high = interval(diffs, pool, 1 - CONFIDENCE)
        if low is not None:
            return Ratio(value, low, high, False, paired=len(diffs))
    return ratio_to_reference(point["_estimate"], reference["_estimate"])


def round_trials(point: dict) -> list[tuple[int, float]] | None:
    """(round, log median) of a grid point's ok repeats; None for a point a searcher proposed (not measured in
    rounds beside its reference)."""
    repeats = point["_repeats"]
    if any(r.get("phase", "grid") not in ("grid", None) for r in repeats):
        return None
    return [(int(r.get("repeat") or 0), math.log(r["step_time_median_s"])) for r in repeats]


def tokens_ratio_text(point: dict, reference: dict, ratio: Ratio) -> str:
    """tokens/s over the reference's. tokens/s = tokens per step / median step time, so its interval is the step
    time ratio's turned over and scaled by the ratio of tokens per step (1 unless the study varies them)."""
    tokens, ref_tokens = point.get("tokens_per_s"), reference.get("tokens_per_s")
    if not is_positive(tokens) or not is_positive(ref_tokens):
        return ""
    per_step = tokens * point["step_time_median_s"] / (ref_tokens * reference["step_time_median_s"])
    interval = f" ({per_step / ratio.high:.2f}–{per_step / ratio.low:.2f})" if ratio.low is not None else ""
    return f"{tokens / ref_tokens:.2f}x{interval}"


def verdict_text(point: dict, reference: dict, ratio: Ratio) -> str:
    """The step time's verdict; where the point runs other tokens per step than the reference, tokens/s's too."""
    if point is reference:
        return "reference"
    text = ratio.verdict()
    tokens, ref_tokens = point.get("tokens_per_s"), reference.get("tokens_per_s")
    if ratio.low is not None and is_positive(tokens) and is_positive(ref_tokens):
        per_step = tokens * point["step_time_median_s"] / (ref_tokens * reference["step_time_median_s"])
        if abs(per_step - 1) > 1e-9:
            low, high = per_step / ratio.high, per_step / ratio.low
            tokens_verdict = NO_MEASURABLE_EFFECT if low <= 1 <= high else "higher" if low > 1 else "lower"
            text += f"; tokens/s {tokens_verdict}"
    return text


def interval_ms(estimate: Estimate | None) -> str:
    if estimate is None or estimate.low_s is None:
        return ""
    return f"{estimate.low_s * 1e3:.1f}–{estimate.high_s * 1e3:.1f}"


def p_text(p_value: float) -> str:
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.3f}"


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


# Our own: pandas' DataFrame.to_markdown needs tabulate, which is no dependency, and a pipe table is three lines
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
