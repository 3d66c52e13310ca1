"""A comparison across hosts (or nodes) shown: a `Comparison` (sweep/results/comparison.py: groups, cells, reference)
as its findings first (sweep/results/compare_findings.py), then side-by-side tables, a speed-up summary, the recorded-variables table and one plot per study, for the terminal,
Markdown, CSV and JSON.

Speed-up vs ref = ref's median step time / this group's median step time: above 1 is faster than ref. One config has
the same tokens per step everywhere, so tokens/s differ by the same factor. The recorded-variables table shows every
distinct value a host's rows carry, so a changed setup (kernel, torch) shows instead of being averaged away.
"""

from __future__ import annotations

import statistics
import textwrap
from pathlib import Path

from sweep.results.compare_findings import compare_findings
from sweep.results.compare_plot import plot_across
from sweep.results.comparison import Cell, CompareError, Comparison, build_comparison, load_rows
from sweep.results.report_html import write_html
from sweep.results.rows import interval_ms, md_table, ms, point_text
from sweep.results.store import slug
from sweep.results.tables import format_table
from trainables.columns import compare_columns

# what callers use: build a comparison (re-exported from comparison.py) and show it
__all__ = [
    "CompareError",
    "Comparison",
    "build_comparison",
    "compare_markdown",
    "compare_text",
    "comparison_json",
    "comparison_records",
    "load_rows",
    "recorded_table",
    "side_by_side",
    "speedup_summary",
    "write_compare",
]

ISA_SHOWN = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "sve", "sve2", "bf16", "i8mm")


# ---- tables -----------------------------------------------------------------------------------------
def side_by_side(c: Comparison) -> tuple[list[str], list[list]]:
    """Per group: median ms (the group's name heads it), tokens/s, and speed-up vs ref (left out for ref itself)."""
    columns = ["study", "point"]
    for g in c.labels:
        columns += [f"{g} ms (ref)", "tokens/s"] if g == c.ref else [f"{g} ms", "tokens/s", "vs ref"]
    several_data = {k[:2] for k in c.compared if sum(1 for o in c.compared if o[:2] == k[:2]) > 1}
    table = []
    for key in c.compared:
        line = [
            key[0],
            point_text({"_point": c.points[key]})
            + (f" ({key[2] or 'data not recorded'})" if key[:2] in several_data else ""),
        ]
        for g in c.labels:
            cell = c.cells[key].get(g)
            line += [cell_text(cell), f"{cell.tokens_per_s:,.0f}" if cell and cell.tokens_per_s else ""]
            line += [] if g == c.ref else [speedup_text(c, key, g)]
        table.append(line)
    return columns, table


def cell_text(cell: Cell | None) -> str:
    """'220.0 (n=3, 181.3–309.9)': the median over n rows and its 95% interval; one row: its median only."""
    if not cell:
        return ""
    interval = interval_ms(cell.estimate)
    return ms(cell.step_time_s) + (f" (n={cell.rows}, {interval})" if cell.rows > 1 and interval else "")


def speedup_text(c: Comparison, key: tuple[str, str, str], label: str) -> str:
    speedup, interval = c.speedup(key, label), c.speedup_interval(key, label)
    if not speedup:
        return ""
    if not interval or interval.low is None:
        return f"{speedup:.2f}x"
    verdict = ", no measurable effect" if interval.measurable is False else ""
    return f"{speedup:.2f}x ({interval.low:.2f}–{interval.high:.2f}{verdict})"


def speedup_summary(c: Comparison) -> tuple[list[str], list[list]]:
    """Per group: the geometric mean (and range) of its speed-up over the configs it shares with ref."""
    table = []
    for g in c.labels:
        ratios = [s for k in c.compared if (s := c.speedup(k, g))]
        mean = statistics.geometric_mean(ratios) if ratios else None
        spread = f"{min(ratios):.2f}x–{max(ratios):.2f}x" if ratios else ""
        table.append(
            [g + (" (ref)" if g == c.ref else ""), c.ok_rows(g), len(ratios), f"{mean:.2f}x" if mean else "", spread]
        )
    return [c.by, "ok rows", "configs shared with ref", "speed-up (geometric mean)", "min–max"], table


def value_text(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{round(value, 1):g}"
    return str(value)


def recorded_table(c: Comparison) -> tuple[list[str], list[list]]:
    """The variables a run records but does not set, one row each (left out where no group recorded it), one column
    per group: every distinct value its rows carry, "" where its rows lack it."""
    table = []
    for column in compare_columns():
        name = column.name
        values = [dict.fromkeys(value_text(r[name]) for r in c.rows[g] if r.get(name) is not None) for g in c.labels]
        if any(values):
            table.append([column.compare] + [" / ".join(v) for v in values])
        if name == "hw_smt":
            table += _isa_rows(c)
    return ["recorded", *c.labels], table


def _isa_rows(c: Comparison) -> list[list]:
    flags = {}  # label -> the flags its rows report, None when no row recorded hw_isa
    for g in c.labels:
        isa = [str(r["hw_isa"]) for r in c.rows[g] if r.get("hw_isa") is not None]
        flags[g] = {f for text in isa for f in text.split(",")} if isa else None
    shown = [f for f in ISA_SHOWN if any(f in (have or ()) for have in flags.values())]
    return [
        [f"ISA {f}"] + ["" if flags[g] is None else "yes" if f in flags[g] else "no" for g in c.labels] for f in shown
    ]


# ---- output ----------------------------------------------------------------------------------------
def intro(c: Comparison) -> str:
    split = (
        "one group per node IP"
        if c.by == "node"
        else "one group per hostname; a hostname reported by two or more node IPs is split into 'host (ip)'"
    )
    single = sum(1 for k in c.cells if len(c.cells[k]) == 1)
    return (
        f"Rows of sweep(s) {', '.join(c.sweeps)}, grouped by {c.by} ({split}). Each cell is the median over the ok "
        f"rows of that {c.by} and config; (n=3, a–b) marks a median of 3 rows and its 95% confidence interval "
        "(hierarchical bootstrap over the rows and their steps); a speed-up between two such cells carries its "
        "interval, and 'no measurable effect' where that includes 1.00. "
        f"Reference: {c.ref} ({c.ref_reason}). "
        f"vs ref = {c.ref}'s median step time / this {c.by}'s median step time: above 1.00x is faster than "
        f"{c.ref}; one config has the same tokens per step everywhere, so tokens/s differ by the same factor. "
        f"{len(c.compared)} configs finished ok on two or more {c.by}s; {single} ran ok on one {c.by} only: not "
        "tabled, plotted where their study has a compared config."
        + (f" Left out, no ok config in common with another {c.by}: {'; '.join(c.left_out)}." if c.left_out else "")
    )


def compare_text(c: Comparison) -> str:
    """Plain-text tables for the terminal."""
    tables = [format_table(*side_by_side(c)), format_table(*speedup_summary(c)), format_table(*recorded_table(c))]
    return "\n\n".join([textwrap.fill(intro(c), 120), *tables])


def compare_markdown(c: Comparison, out: Path, level: int = 2) -> str:
    """The Markdown section (tables and plot links); writes one compare-<study>.png per compared study into out."""
    out.mkdir(parents=True, exist_ok=True)
    sub = "#" * (level + 1)
    parts = [f"{'#' * level} Across {c.by}s", compare_findings(c, out, level + 1), f"{sub} How to read", intro(c)]
    parts += [f"{sub} Median step time (ms) and tokens/s side by side"]
    parts += [md_table(*side_by_side(c)), f"{sub} Speed-up vs {c.ref}", md_table(*speedup_summary(c))]
    parts += [f"{sub} Recorded, not set, per {c.by}", md_table(*recorded_table(c)), f"{sub} Step time per study"]
    for study in dict.fromkeys(study for study, *_ in c.compared):
        png = out / f"compare-{slug(study)}.png"
        lines = {
            g: [(c.points[k], c.cells[k][g]) for k in c.cells if k[0] == study and g in c.cells[k]] for g in c.labels
        }
        plot_across(png, study, c.by, lines)
        parts.append(f"![{study} across {c.by}s]({png.name})")
    return "\n\n".join(parts)


def write_compare(c: Comparison, out: Path) -> Path:
    """compare.md and its PNGs in out, and compare.html (the same page, self-contained); returns compare.md's path."""
    path = Path(out) / "compare.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(compare_markdown(c, path.parent, level=1) + "\n")
    write_html(path)
    return path


def comparison_json(c: Comparison) -> dict:
    """What --format json prints: the records, and per group every recorded variable."""
    columns, table = recorded_table(c)
    recorded = {g: {line[0]: line[i] for line in table} for i, g in enumerate(columns[1:], start=1)}
    return {"by": c.by, "ref": c.ref, "sweeps": c.sweeps, "configs": comparison_records(c), "recorded": recorded}


def comparison_records(c: Comparison) -> list[dict]:
    """One record per compared config and group: what --format csv prints."""
    return [record(c, key, g) for key in c.compared for g in c.labels if g in c.cells[key]]


def record(c: Comparison, key: tuple[str, str, str], label: str) -> dict:
    cell, interval = c.cells[key][label], c.speedup_interval(key, label)
    several = cell.rows > 1  # the 95% intervals where the rows support them (ref's too, for the speed-up)
    return {
        "study": key[0],
        "point": point_text({"_point": c.points[key]}),
        "config_key": key[1],
        c.by: label,
        "rows": cell.rows,
        "step_time_median_s": cell.step_time_s,
        "tokens_per_s": cell.tokens_per_s,
        "speedup_vs_ref": c.speedup(key, label),
        "ref": c.ref,
        "data": key[2],
        "step_time_low_s": cell.estimate.low_s if several else None,
        "step_time_high_s": cell.estimate.high_s if several else None,
        "speedup_low": interval.low if interval else None,
        "speedup_high": interval.high if interval else None,
    }
