"""The same configs measured on several hosts (or nodes), as numbers: which rows form a group, each group's median per
config with its interval, and the reference group (a `Comparison`). sweep/results/compare.py shows one.

Which rows: every sweep in the store by default, because a config_key names the same measured config whichever sweep
ran it, and a device comparison often pools a multi-node sweep with runs made on one machine at a time. A cell is the
median over every ok row its host has for the config (and the text it trained on: the hub's and the offline corpus
never pool) and says how many rows it pools; where it pools several, it carries their 95% confidence interval (the
hierarchical bootstrap of sweep/results/stats.py: the rows are the repeats), and so does its speed-up where both cells
have several. `sweep="latest"` or a sweep id narrows the rows to one sweep.

Groups (`by`):
- "host": one group per hostname; a hostname that two or more node IPs report is split into "host (ip)" groups, so
  two machines that share a name never merge.
- "node": one group per node IP, named "host (ip)".
A row without a node IP (older rows, failures the driver recorded) takes its hostname's IP when the other rows give it
exactly one; otherwise it stays apart as "host (IP not recorded)".

Speed-up vs ref = ref's median step time / this group's median step time: above 1 is faster than ref. The default ref
is the group with the most ok rows (ties: the first label in sort order).
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass

from sweep.results.rows import clean_row, data_of, estimate_of, is_number, is_positive, latest_sweep, plan_order
from sweep.results.stats import Estimate, Ratio, ratio_to_reference
from sweep.results.store import EmptyStore, Store

GROUP_BY = ("host", "node")
NO_IP = "IP not recorded"


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
