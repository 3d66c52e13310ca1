"""Across devices: the same configs measured on several hosts (or nodes), side by side.

Which rows: every sweep in the store by default, because a config_key names the same measured config whichever sweep
ran it, and a device comparison often pools a multi-node sweep with runs made on one machine at a time. A cell is the
median over every ok row its host has for the config (and the text it trained on: the hub's and the offline corpus
never pool) and says how many rows it pools; where it pools several, it carries their 95% confidence interval (the
hierarchical bootstrap of sweep/results/stats.py: the rows are the repeats), and so does its speed-up where both cells
have several. The recorded-variables table
shows every distinct value a host's rows carry, so a changed setup (kernel, torch) shows instead of being averaged
away. `sweep="latest"` or a sweep id narrows the rows to one sweep.

Groups (`by`):
- "host": one group per hostname; a hostname that two or more node IPs report is split into "host (ip)" groups, so
  two machines that share a name never merge.
- "node": one group per node IP, named "host (ip)".
A row without a node IP (older rows, failures the driver recorded) takes its hostname's IP when the other rows give it
exactly one; otherwise it stays apart as "host (IP not recorded)".

Speed-up vs ref = ref's median step time / this group's median step time: above 1 is faster than ref. One config has
the same tokens per step everywhere, so tokens/s differ by the same factor. The default ref is the group with the
most ok rows (ties: the first label in sort order).
"""

from __future__ import annotations

import math
import re
import statistics
import textwrap
from dataclasses import dataclass
from pathlib import Path

from sweep.results.rows import (
    clean_row,
    data_of,
    estimate_of,
    interval_ms,
    is_number,
    is_positive,
    latest_sweep,
    md_table,
    ms,
    plan_order,
    point_text,
)
from sweep.results.stats import Estimate, Ratio, ratio_to_reference
from sweep.results.store import EmptyStore, Store, slug
from sweep.results.tables import format_table
from trainables.columns import compare_columns

GROUP_BY = ("host", "node")
NO_IP = "IP not recorded"
ISA_SHOWN = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "sve", "sve2", "bf16", "i8mm")


class CompareError(LookupError):
    """A comparison the rows cannot give: an unknown reference, nothing measured ok on two groups."""


@dataclass
class Cell:
    step_time_s: float  # median over the group's ok rows of one config
    tokens_per_s: float | None
    rows: int
    estimate: Estimate  # step_time_s with its 95% interval; shown where the cell pools several rows


@dataclass
class Comparison:
    by: str
    ref: str
    ref_reason: str
    labels: list[str]  # the groups with a config in common with another group: ref first, then in sort order
    aliases: dict[str, set[str]]  # label -> the hostnames and IPs its rows carry (what --ref may name)
    cells: dict[tuple[str, str, str], dict[str, Cell]]  # (study, config_key, data) -> label -> cell, every ok config
    compared: list[tuple[str, str, str]]  # the configs ok on two or more groups, by study then axis value
    points: dict[tuple[str, str, str], dict]
    rows: dict[str, list[dict]]  # label -> its cleaned rows
    sweeps: list[str]
    left_out: list[str]  # groups with rows but no ok config in common with another group

    def ok_rows(self, label: str) -> int:
        return sum(1 for r in self.rows[label] if r["_ok"])

    def speedup(self, key: tuple[str, str, str], label: str) -> float | None:
        ref, cell = self.cells[key].get(self.ref), self.cells[key].get(label)
        return ref.step_time_s / cell.step_time_s if ref and cell else None

    def speedup_interval(self, key: tuple[str, str, str], label: str) -> Ratio | None:
        """ref's step time over this group's with its 95% interval, where both cells pool several rows (a single row
        has only its steps to resample, which says nothing about how far a repeat of it would land)."""
        ref, cell = self.cells[key].get(self.ref), self.cells[key].get(label)
        if not ref or not cell or label == self.ref or min(ref.rows, cell.rows) < 2:
            return None
        return ratio_to_reference(ref.estimate, cell.estimate)


def load_rows(store: Store, sweep: str | None = None) -> list[dict]:
    """Every row of the store (None), of the most recent sweep ("latest") or of one sweep id."""
    if not store.files():
        raise EmptyStore(f"the store at {store.root} holds no trials yet")
    sweep = latest_sweep(store) if sweep == "latest" else sweep
    rows = store.rows(sweep)
    if not rows:
        raise EmptyStore(f"sweep {sweep!r} has no rows in the store at {store.root}")
    return rows


def node_count(rows: list[dict]) -> int:
    """Distinct node IPs among the rows; rows older than the node column count their hostnames."""
    return len({r["node"] for r in rows if r.get("node")}) or len({r.get("host") for r in rows})


def group_rows(rows: list[dict], by: str = "host") -> dict[str, list[dict]]:
    """label -> the rows of that group (the same dicts, in their order), labels sorted; see the module docstring."""
    if by not in GROUP_BY:
        raise CompareError(f"by={by!r}: choose one of {', '.join(GROUP_BY)}")
    ips_of: dict[str, set[str]] = {}
    for r in rows:
        if r.get("node"):
            ips_of.setdefault(str(r.get("host")), set()).add(str(r["node"]))
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        host, ips = str(r.get("host")), ips_of.get(str(r.get("host")), set())
        ip = str(r["node"]) if r.get("node") else (next(iter(ips)) if len(ips) == 1 else None)
        if by == "node":
            key = ("ip", ip) if ip else ("no-ip", host)
        else:
            key = ("host", host) if len(ips) <= 1 else ("ip", ip) if ip else ("no-ip", host)
        groups.setdefault(key, []).append(r)
    labelled = {}
    for (kind, name), members in groups.items():
        hosts = "/".join(sorted({str(r.get("host")) for r in members}))
        labelled[hosts if kind == "host" else f"{hosts} ({name if kind == 'ip' else NO_IP})"] = members
    return dict(sorted(labelled.items()))


def build_comparison(rows: list[dict], by: str = "host", ref: str | None = None) -> Comparison:
    """The comparison of store rows (any sweeps); raises CompareError when no config ran ok on two groups."""
    rows = sorted((clean_row(r) for r in rows), key=plan_order)
    groups = group_rows(rows, by)
    cells: dict[tuple[str, str, str], dict[str, Cell]] = {}
    points: dict[tuple[str, str, str], dict] = {}
    for r in rows:
        if r["_ok"]:
            points.setdefault(config_of(r), r["_point"])
    for label, members in groups.items():
        by_config: dict[tuple[str, str, str], list[dict]] = {}
        for r in members:
            if r["_ok"]:
                by_config.setdefault(config_of(r), []).append(r)
        for key, ok in by_config.items():
            tokens = [r["tokens_per_s"] for r in ok if is_positive(r.get("tokens_per_s"))]
            estimate = estimate_of(ok, "/".join((label, *key)))
            tokens_median = statistics.median(tokens) if tokens else None
            cells.setdefault(key, {})[label] = Cell(estimate.median_s, tokens_median, len(ok), estimate)
    compared = _study_order([k for k in points if len(cells.get(k, {})) >= 2], points)
    sweeps = sorted({str(r.get("sweep")) for r in rows})
    if not compared:
        counts = ", ".join(f"{g} {sum(1 for r in m if r['_ok'])}" for g, m in groups.items())
        raise CompareError(
            f"nothing to compare: no config finished ok on two or more {by}s in sweep(s) {', '.join(sweeps)} "
            f"(ok rows per {by}: {counts})"
        )
    labels = sorted({label for k in compared for label in cells[k]})
    aliases = {g: {g} | {str(r["host"]) for r in groups[g] if r.get("host")} for g in labels}
    for g in labels:
        aliases[g] |= {str(r["node"]) for r in groups[g] if r.get("node")}
    rows_of, left_out = {g: groups[g] for g in labels}, [g for g in groups if g not in labels]
    comparison = Comparison(
        by=by,
        ref="",
        ref_reason="",
        labels=labels,
        aliases=aliases,
        cells=cells,
        compared=compared,
        points=points,
        rows=rows_of,
        sweeps=sweeps,
        left_out=left_out,
    )
    comparison.ref, comparison.ref_reason = _reference(comparison, ref)
    comparison.labels = [comparison.ref] + [g for g in labels if g != comparison.ref]
    return comparison


def config_of(row: dict) -> tuple[str, str, str]:
    """(study, config_key, the text it trained on): what one cell pools."""
    return str(row.get("study")), str(row.get("config_key")), data_of(row)


def _study_order(keys: list[tuple[str, str, str]], points: dict) -> list[tuple[str, str, str]]:
    """Studies in first-seen order; inside one, numeric axis values ascending, other values in plan order."""
    studies = list(dict.fromkeys(study for study, *_ in keys))
    seen: dict[str, list] = {}
    for key in keys:
        for axis, value in points[key].items():
            seen.setdefault(axis, []).append(value)

    def value_order(key):
        return [(0, v) if is_number(v) else (1, seen[a].index(v)) for a, v in points[key].items()]

    return [k for s in studies for k in sorted((k for k in keys if k[0] == s), key=lambda k: (value_order(k), k[2]))]


def _reference(c: Comparison, ref: str | None) -> tuple[str, str]:
    if ref is None:
        label = min(c.labels, key=lambda g: (-c.ok_rows(g), g))
        tied = sum(1 for g in c.labels if c.ok_rows(g) == c.ok_rows(label))
        return label, f"the most ok rows: {c.ok_rows(label)}" + (f", first by name of {tied} tied" if tied > 1 else "")
    found = [g for g in c.labels if ref in c.aliases[g]]
    known = "; ".join(
        g + "".join(f" = {a}" for a in sorted(c.aliases[g] - set(re.split(r"[ ()/]+", g)))) for g in c.labels
    )
    if not found:
        raise CompareError(f"reference {ref!r} names no compared {c.by}; known: {known}")
    if len(found) > 1:
        raise CompareError(f"reference {ref!r} names {len(found)} {c.by}s ({'; '.join(found)}): give the node IP")
    return found[0], f"chosen as {ref!r}"


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
        mean = math.exp(statistics.fmean(math.log(s) for s in ratios)) if ratios else None
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
    from sweep.results.compare_plot import plot_across

    out.mkdir(parents=True, exist_ok=True)
    sub = "#" * (level + 1)
    parts = [f"{'#' * level} Across {c.by}s", intro(c), f"{sub} Median step time (ms) and tokens/s side by side"]
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
    """compare.md and its PNGs in out; returns compare.md's path."""
    path = Path(out) / "compare.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(compare_markdown(c, path.parent, level=1) + "\n")
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
