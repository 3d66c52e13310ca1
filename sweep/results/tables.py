"""Plain-text tables for the terminal: query results and the per-study summary."""

from __future__ import annotations

import json
import math

from sweep.results.store import Store
from trainables.config import format_assignments


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
    """Per study: each value of its axis against median step time and tokens/s, and the ratio to the first value."""
    rows = store.rows(sweep_id)
    if not rows:
        return f"sweep {sweep_id}: no rows"
    several_nodes = len({r.get("node") for r in rows}) > 1
    by_study: dict[str, list[dict]] = {}
    for row in sorted(rows, key=lambda r: r.get("trial_index") or 0):  # the plan's order of values
        where = f" on {row.get('host')} ({row.get('node')})" if several_nodes else ""
        by_study.setdefault(f"{row['study']}{where}", []).append(row)
    blocks = []
    for study, study_rows in by_study.items():
        table = []
        first = None
        for row in study_rows:
            point = format_assignments(json.loads(row.get("point") or "{}"))
            median = row.get("step_time_median_s")
            ok = row.get("status") == "ok" and median is not None
            if ok and first is None:
                first = median
            ratio = f"{median / first:.2f}x" if ok and first else ""
            table.append(
                (
                    point,
                    f"{median * 1e3:.1f}" if ok else row.get("status"),
                    f"{row['tokens_per_s']:,.0f}" if ok else "",
                    ratio,
                    f"{row['step_time_cv']:.1%}" if ok else str(row.get("error") or "")[:60],
                )
            )
        blocks.append(
            f"study {study}\n"
            + format_table(["point", "step ms (median)", "tokens/s", "vs first", "CV / reason"], table)
        )
    return "\n\n".join(blocks)
