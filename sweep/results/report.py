"""The report of one sweep: `<result>/report/<sweep>/index.md`, with one PNG per study, put together from its sections.

In order: a header (plan, hosts, trial counts), the findings (sweep/results/findings.py: what mattered, ranked, the
fastest setting and the drift verdict), how to read the intervals, the comparison across nodes for a sweep that
ran on several (sweep/results/compare.py), the Drift section from the control point (sweep/results/report_drift.py),
one section per study and node (sweep/results/report_study.py), each framework against the machine's best matmul
(sweep/results/efficiency.py), then the whole-sweep tables: forward/backward/optimizer,
projections and the trials that did not finish ok (sweep/results/report_tables.py), and where the runs' wall time
went (sweep/results/wall_time.py). Rows written by older versions lack some columns: every column is read with .get()
and may be None/NaN.

A sweep that ran on several nodes never mixes them in one curve or fit: each study gets one section per node (titled
"on host (ip)"), and the "Across nodes" section puts the nodes side by side first.
"""

from __future__ import annotations

from pathlib import Path

from sweep.predict.report_section import prediction_section
from sweep.results.compare import compare_markdown
from sweep.results.comparison import CompareError, build_comparison, group_rows, node_count
from sweep.results.efficiency import efficiency_section
from sweep.results.findings import findings_section
from sweep.results.racing import node_pools
from sweep.results.report_drift import drift_section
from sweep.results.report_html import write_html
from sweep.results.report_study import study_section
from sweep.results.report_tables import not_ok, phase_table, projections
from sweep.results.resolution import ratio_lines, resolution_markdown, sweep_budget
from sweep.results.roofline_chart import roofline_section
from sweep.results.rows import clean_row, is_control, latest_sweep, plan_order, point_rows, study_shape, time_order
from sweep.results.stats import CONFIDENCE, RESAMPLES, SEED
from sweep.results.store import EmptyStore, Store
from sweep.results.wall_time import breakdown_markdown, load_breakdowns

READING = (
    f"How to read the step times: each point's median step time is the median over its repeats (trials of the same "
    f"config) of each repeat's median step time; its {CONFIDENCE:.0%} confidence interval is a hierarchical bootstrap "
    f"({RESAMPLES} resamples, seed {SEED}) that draws the repeats and, inside each, its steps, because whole trials "
    "shift level on these machines. A ratio to the study's reference is the geometric mean of the rounds' ratios "
    "(the point over the reference measured in the same round, which cancels the drift they share), its interval "
    "Student's t over the rounds with the variance pooled over every ratio of the node (sweep/results/paired.py); "
    "where the rounds cannot be paired (a point a searcher proposed) it comes from the bootstrap resamples. "
    "A ratio marked **no measurable effect** has an interval that includes 1.00. A point with 1 repeat and no pairing can "
    "resample its steps only: its interval ignores between-trial variation and is too narrow, and its verdict says "
    "'1 repeat: steps only'. Knees and Amdahl fits "
    "are shown only where there are more distinct values than parameters and, for a knee, where it fits "
    "significantly better than one straight line."
)


def write_report(
    store: Store, sweep_id: str | None, out_dir: Path | None = None, tokens: float | None = None, noisy_cv: float = 0.05
) -> Path:
    """Write index.md, the PNGs and index.html (the same, self-contained: sweep/results/report_html.py) for a sweep (None: the one recorded most recently); returns index.md's path."""
    sweep_id = sweep_id or latest_sweep(store)
    stored = store.rows(sweep_id)
    rows = sorted((clean_row(r) for r in stored), key=plan_order)
    if not rows:
        raise EmptyStore(f"sweep {sweep_id!r} has no rows in the store at {store.root}")
    out = Path(out_dir) if out_dir else store.root / "report" / sweep_id
    out.mkdir(parents=True, exist_ok=True)
    nodes = split_by_node(rows)
    control = sorted((r for r in rows if is_control(r)), key=time_order)
    studies: dict[str, list[dict]] = {}
    for row in rows:
        if not is_control(row):
            studies.setdefault(str(row.get("study")), []).append(row)
    sections = [
        (name, node, point_rows([r for r in study_rows if r.get("_node") == node]))
        for name, study_rows in studies.items()
        for node in nodes
    ]
    sections = [(name, node, study_shape(points)[-1]) for name, node, points in sections if points]
    points = [p for *_, section_points in sections for p in section_points]
    rows = [r for p in points for r in p["_rows"]] + control  # whole-sweep tables follow the sections
    budget = sweep_budget(store.root, sweep_id)
    lines = ratio_lines(stored, budget)
    parts = [header(sweep_id, rows), findings_section(lines, rows, control, out), READING]
    parts += [across_nodes(rows, out)] if len(nodes) > 1 else []
    parts += [resolution_markdown(lines, budget)]
    parts += [drift_section(control, nodes)]
    pools = node_pools(stored)
    parts += [study_section(name, section_points, out, node, pools) for name, node, section_points in sections]
    parts += [efficiency_section(rows)]
    parts += [roofline_section(rows, out), prediction_section(rows, out)]
    parts += [phase_table(rows, noisy_cv), projections(points, tokens), not_ok(rows)]
    parts += [breakdown_markdown(load_breakdowns(store.root, sweep_id))]
    index = out / "index.md"
    index.write_text("\n\n".join(parts) + "\n")
    write_html(index)
    return index


def split_by_node(rows: list[dict]) -> list[str | None]:
    """The node labels ("host (ip)") of a sweep that ran on several nodes, each row marked with its own in "_node";
    [None] for one node. Curves and fits never mix nodes: each study gets one section per node."""
    if node_count(rows) < 2:
        return [None]
    groups = group_rows(rows, by="node")
    for label, members in groups.items():
        for r in members:
            r["_node"] = label
    return list(groups)


def across_nodes(rows: list[dict], out: Path) -> str:
    """The cross-node comparison (compare.py) of one sweep; its plots go next to index.md."""
    try:
        return compare_markdown(build_comparison(rows, by="node"), out, level=2)
    except CompareError as exc:
        return f"## Across nodes\n\n{exc}."


def header(sweep_id: str, rows: list[dict]) -> str:
    hosts: dict[str, set[str]] = {}
    for r in rows:
        models = hosts.setdefault(str(r.get("_node") or r.get("host")), set())
        if r.get("hw_cpu_model"):  # rows of trials that never started carry no fingerprint
            models.add(str(r["hw_cpu_model"]))
    counts: dict[str, int] = {}
    for r in rows:
        counts[str(r.get("status"))] = counts.get(str(r.get("status")), 0) + 1
    times = sorted(str(r["recorded_at"]) for r in rows if r.get("recorded_at"))
    lines = [
        f"# Sweep `{sweep_id}`",
        "",
        f"- plan: {', '.join(sorted({str(r.get('plan')) for r in rows if r.get('plan')})) or 'not recorded'}",
        ("- nodes: " if any(r.get("_node") for r in rows) else "- host(s): ")
        + "; ".join(f"{h} ({', '.join(sorted(m)) or 'CPU model not recorded'})" for h, m in sorted(hosts.items())),
        f"- trials: {len(rows)} ({', '.join(f'{s} {n}' for s, n in sorted(counts.items()))})",
    ]
    if times:
        lines.append(f"- recorded: {times[0]} to {times[-1]}")
    return "\n".join(lines)
