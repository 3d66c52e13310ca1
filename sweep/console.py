"""The text bench.py's commands print: a plan's trials, a trial's summary, a sweep's and an autotune's closing
lines, the columns listing, and query and comparison results as a table, CSV or JSON.

Each function returns the text and prints nothing, so bench.py stays the one place that writes to the terminal.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from sweep.plan import CONTROL_STUDY, Plan
from sweep.results import compare
from sweep.results.racing import STOPPED
from sweep.results.tables import format_table
from trainables.columns import COLUMNS, summary_columns
from trainables.config import format_assignments


def plan_table(plan: Plan) -> str:
    """The plan's trials as a terminal table, then what this machine skips."""
    rows = [
        (i + 1, t.study, format_assignments(t.point), t.config_key, t.unsupported or "")
        for i, t in enumerate(plan.trials)
    ]
    studies = len({t.study for t in plan.trials})
    text = f"plan {plan.name} ({plan.source}): {len(plan.trials)} trials in {studies} studies\n"
    control = f"(the baseline, study {CONTROL_STUDY})" if plan.control else "(no control points here)"
    text += f"repeats {plan.repeats}, order_seed {plan.order_seed}, control_every {plan.control_every} {control}\n"
    text += format_table(["#", "study", "point", "config_key", "unsupported"], rows)
    if plan.skipped:
        text += "\nskipped on this machine (skip_unsupported):\n" + "\n".join(f"  - {s}" for s in plan.skipped)
    return text


def trial_summary(row: dict) -> str:
    """A trial's row as `name  value` lines of its summary columns (empty ones left out), then its stderr tail."""
    lines = []
    width = max(len(column.name) for column in summary_columns())
    for column in summary_columns():
        value = row.get(column.name)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        lines.append(f"  {column.name:<{width}} {column.summary.format(value)}")
    if row.get("stderr_tail"):
        lines.append("  stderr (tail):")
        lines.append("    " + row["stderr_tail"].strip().replace("\n", "\n    "))
    return "\n".join(lines)


def sweep_closing(sweep, wall_s: float, result_dir: Path) -> str:
    """`bench.py run`'s last line: trials and rows, nodes, what this run recorded, and its time inside the steps."""
    share = sweep.steps_s / wall_s if wall_s > 0 else 0.0
    runs = sum(pair.get("measured_by") is None for pair in sweep.pairs)
    return (
        f"\nsweep {sweep.sweep_id}: {runs} trials for {len(sweep.pairs)} rows (repeats, control points and studies "
        f"sharing a config included) on {len(sweep.nodes)} node(s){' + refinement' if sweep.refinements else ''}; "
        f"{sweep.recorded_here} rows recorded by this run ({sweep.shared_here} of them copies of a shared measurement) "
        f"in {wall_s:.0f} s; {sweep.steps_s:.0f} s ({share:.0%}) inside warm-up + measured steps"
        f"{budget_clause(sweep)}. Rows: {result_dir / 'trials'}"
    )


def budget_clause(sweep) -> str:
    """How a budgeted sweep spent its budget (sweep/budget.py), for the closing line; '' without one."""
    budget = sweep.budget
    if budget is None:
        return ""
    count = sum(bool(pair.get("dropped")) and pair.get("measured_by") is None for pair in sweep.pairs)
    dropped = f", {count} trials left out at the deadline" if count else ""
    return (
        f"; budget {budget.seconds / 60:.0f} min: {budget.rounds} rounds "
        f"({budget.first_round} for every point, then racing), ended: {STOPPED.get(budget.stopped, 'interrupted')}"
        f"{dropped}"
    )


def autotune_summary(result, trials: int, ab_rounds: int) -> str:
    """An autotune's outcome (sweep/autotune.py `AutotuneResult`): default, best, speed-up, how to reproduce it."""
    return "\n".join(
        [
            f"\nautotune {result.sweep_id}: {trials} settings tried, then {ab_rounds} A/B rounds",
            f"  default: {result.default}",
            f"  best:    {result.best}",
            f"  speed-up of best over default: {result.speedup:.3f}x "
            f"(per A/B round {result.speedup_low:.3f}x..{result.speedup_high:.3f}x)",
            f"  reproduce: {result.command}",
        ]
    )


def columns_table(kind: str | None) -> str:
    """Every result column of this kind (None: all) with its kind, type, unit and meaning."""
    chosen = [c for c in COLUMNS.values() if kind in (None, c.kind)]
    return format_table(
        ["column", "kind", "type", "unit", "meaning"], [(c.name, c.kind, c.type, c.unit, c.meaning) for c in chosen]
    )


def query_output(columns: list[str], rows: list, output_format: str) -> str:
    """A query's result as `table`, `csv` or `json` (one list of objects), ending in a newline."""
    if output_format == "json":
        return json.dumps([dict(zip(columns, r, strict=True)) for r in rows], default=str) + "\n"
    if output_format == "csv":
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(columns)
        writer.writerows(rows)
        return text.getvalue()
    return format_table(columns, rows) + "\n"


def comparison_output(comparison, output_format: str) -> str:
    """A comparison (sweep/results/compare.py) as `table` (its side-by-side tables), `csv` (one record per config
    and host) or `json`, ending in a newline."""
    if output_format == "table":
        return compare.compare_text(comparison) + "\n"
    if output_format == "json":
        return json.dumps(compare.comparison_json(comparison)) + "\n"
    records = compare.comparison_records(comparison)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(records[0]))
    writer.writeheader()
    writer.writerows(records)
    return text.getvalue()
