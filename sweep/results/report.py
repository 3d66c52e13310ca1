"""The report of one sweep: `<result>/report/<sweep>/index.md` with one PNG per study.

Per study a plot and table of each point's median step time over its repeats with a 95% confidence interval, tokens/s,
and the ratio to the study's first value with its interval and verdict ("no measurable effect" where the interval
includes 1.0; sweep/results/stats.py); the segmented log-log fit (knee) for numeric axes where the points support one,
and speed-up, efficiency and an Amdahl fit for core counts; a Drift section from the control point; then a
forward/backward/optimizer table with noisy rows flagged, projections to 10,000 steps and to a token budget, and every
trial that did not finish ok with its reason. Rows written by older versions lack some columns: every column is read
with .get() and may be None/NaN.

A sweep that ran on several nodes never mixes them in one curve or fit: each study gets one section per node (titled
"on host (ip)"), and an "Across nodes" section (sweep/compare.py) puts the nodes side by side first.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from sweep.results.compare import CompareError, build_comparison, compare_markdown, group_rows, node_count
from sweep.results.fit import amdahl_fit, bend_evidence, segmented_fit, speedup_and_efficiency
from sweep.results.report_plot import plot_study
from sweep.results.rows import (
    clean_row,
    data_of,
    drift_sentence,
    interval_ms,
    is_control,
    is_number,
    is_positive,
    latest_sweep,
    md_table,
    ms,
    p_text,
    plan_order,
    point_rows,
    point_text,
    ratios_to_first,
    step_times,
    study_shape,
    time_order,
    tokens_ratio_text,
    verdict_text,
)
from sweep.results.stats import CONFIDENCE, RESAMPLES, SEED, control_drift, point_estimate, ratio_to_reference
from sweep.results.store import EmptyStore, Store, slug

PROJECTION_STEPS = 10_000
CORE_AXES = ("cores", "threads")
FLAT_BEND = 0.1  # slopes closer than this in log-log are one straight line within step-time noise
ASSUMPTIONS = (
    "Assumptions: every step takes the steady-state median step time measured after warm-up (compile and cold start "
    "excluded); data loading, evaluation and checkpointing are excluded; one process on the cores this trial was "
    "pinned to, with nothing else running."
)
READING = (
    f"How to read the step times: each point's median step time is the median over its repeats (trials of the same "
    f"config) of each repeat's median step time; its {CONFIDENCE:.0%} confidence interval is a hierarchical bootstrap "
    f"({RESAMPLES} resamples, seed {SEED}) that draws the repeats and, inside each, its steps, because whole trials "
    "shift level on these machines. A ratio's interval comes from the same resamples; **no measurable effect** marks "
    "a ratio whose interval includes 1.00. A point with 1 repeat can resample its steps only: its interval ignores "
    "between-trial variation and is too narrow, and its verdict says '1 repeat: steps only'. Knees and Amdahl fits "
    "are shown only where there are more distinct values than parameters and, for a knee, where it fits "
    "significantly better than one straight line."
)


def write_report(
    store: Store, sweep_id: str | None, out_dir: Path | None = None, tokens: float | None = None, noisy_cv: float = 0.05
) -> Path:
    """Write index.md and the PNGs for a sweep (None: the one recorded most recently); returns index.md's path."""
    sweep_id = sweep_id or latest_sweep(store)
    rows = sorted((clean_row(r) for r in store.rows(sweep_id)), key=plan_order)
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
    parts = [header(sweep_id, rows), READING] + ([across_nodes(rows, out)] if len(nodes) > 1 else [])
    parts += [drift_section(control, nodes)]
    parts += [study_section(name, section_points, out, node) for name, node, section_points in sections]
    parts += [phase_table(rows, noisy_cv), projections(points, tokens), not_ok(rows)]
    index = out / "index.md"
    index.write_text("\n\n".join(parts) + "\n")
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


def config(row: dict) -> str:
    return f"{row.get('study')}: {point_text(row)}" + (f" on {row['_node']}" if row.get("_node") else "")


# ---- formatting -----------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    """'42 s', '3 m 20 s', '1 h 23 m', '2 d 5 h': two units are enough to plan a run."""
    s = int(round(seconds))
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if s >= size:
            return f"{s // size} {unit} {s % size // sub_size} {sub}"
    return f"{seconds:.3g} s" if seconds < 10 else f"{s} s"


def seconds_and_duration(seconds: float) -> str:
    return f"{seconds:.0f} s ({duration(seconds)})" if seconds >= 60 else duration(seconds)


# ---- header ---------------------------------------------------------------------------------------
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


# ---- one study ------------------------------------------------------------------------------------


def study_section(study: str, points: list[dict], out: Path, node: str | None = None) -> str:
    """A study's plot, fits and table; `node`: the points are one node's of a multi-node sweep, named in the title."""
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
    text += [f"![{label}]({png.name})", "", study_table(points, axes)]
    if reference:
        text += ["", reference_table(points, reference)]
    return "\n".join(text)


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


def phase_text(row: dict) -> str:
    bend = row.get("bend_score")
    return (row.get("phase") or "grid") + (f" (bend score {bend:.3g})" if is_number(bend) else "")


def study_table(points: list[dict], axes: list[str]) -> str:
    """Every point of the study: its median over repeats with the interval, and its ratio to the study's first ok point
    (the smallest value of a numeric axis, else plan order) with the ratio's interval and verdict."""
    ratios = ratios_to_first(points)
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


def drift_section(control: list[dict], nodes: list[str | None]) -> str:
    """The control point per repeat in time order, how far apart its repeats lie, and whether that is noise."""
    if not control:
        return (
            "## Drift\n\nNo control rows: this sweep did not re-measure its baseline, so how far the machine's speed "
            "drifted while it ran is not known."
        )
    parts = [
        "## Drift",
        "The control point is the baseline re-measured through the sweep: where its repeats differ by more than "
        "per-step noise, the machine itself changed speed, and points measured at different times differ by that "
        "much with no effect of their axis.",
    ]
    for node in nodes:
        for point in point_rows([r for r in control if r.get("_node") == node]):
            where = [f"on {node}"] if node else []
            parts.append(" ".join(["### Control", *where]) + "\n\n" + control_block(point))
    return "\n\n".join(parts)


def control_block(point: dict) -> str:
    """The control point's repeats in time order, each with its own (steps-only) interval, and the drift line."""
    repeats = point["_repeats"]
    if not repeats:
        return "No control repeat finished ok."
    estimate = point["_estimate"]
    summary = f"Median over {len(repeats)} repeat(s): {ms(estimate.median_s)} ms" + (
        f" (95% CI {interval_ms(estimate)} ms)." if estimate.low_s is not None else "."
    )
    table = []
    for i, r in enumerate(repeats):
        own = point_estimate([(r["step_time_median_s"], step_times(r))], f"control/{r.get('recorded_at')}/{i}")
        vs_first = r["step_time_median_s"] / repeats[0]["step_time_median_s"]
        table.append(
            [r.get("repeat") or 0, r.get("recorded_at"), ms(own.median_s), interval_ms(own), f"{vs_first:.2f}x"]
        )
    table = md_table(["repeat", "recorded", "median ms", "95% CI ms (its steps)", "vs first"], table)
    if len(repeats) < 2:
        return f"{summary}\n\n{table}\n\nOne control repeat: drift needs at least 2."
    drift = drift_sentence(control_drift([(r["step_time_median_s"], step_times(r)) for r in repeats]), len(repeats))
    return f"{summary}\n\n{table}\n\n{drift}"


# ---- whole-sweep tables ---------------------------------------------------------------------------
def disturbance(row: dict) -> list[str]:
    """A noisy row's foreign CPU share (foreign_cpu_s per second of measured_region_s) and steal_s; "?" where the row
    predates those columns or /proc was unreadable."""

    def known(v) -> bool:
        return is_number(v) and math.isfinite(v)

    foreign, region, steal = row.get("foreign_cpu_s"), row.get("measured_region_s"), row.get("steal_s")
    share = f"{foreign / region:.1%}" if known(foreign) and known(region) and region > 0 else "?"
    return [share, f"{steal:.2f}" if known(steal) else "?"]


def phase_table(rows: list[dict], noisy_cv: float) -> str:
    ok = [r for r in rows if r["_ok"]]
    table = []
    for r in ok:
        cv = r.get("step_time_cv")
        noisy = is_number(cv) and cv > noisy_cv
        loads = (r.get("loadavg_before"), r.get("loadavg_after"))
        load = " → ".join(f"{v:g}" if is_number(v) else "?" for v in loads) if noisy else ""
        mean = r.get("step_time_mean_s") if is_number(r.get("step_time_mean_s")) else r["step_time_median_s"]
        table.append(
            [
                config(r) + (f" (repeat {r['repeat']})" if r.get("repeat") else ""),
                ms(r.get("forward_s"), r.get("forward_std_s")),
                ms(r.get("backward_s"), r.get("backward_std_s")),
                ms(r.get("optimizer_s"), r.get("optimizer_std_s")),
                ms(mean, r.get("step_time_std_s")),
                *(disturbance(r) if noisy else ["", ""]),
                f"{cv:.1%}" if is_number(cv) else "",
                "noisy" if noisy else "",
                load,
            ]
        )
    flagged = sum(1 for t in table if t[8])
    intro = (
        f"## Forward / backward / optimizer\n\nMean per step ± std over the measured steps, in ms. {flagged} of "
        f"{len(table)} ok rows are flagged noisy (CV > {noisy_cv:.0%}); for those, whether others disturbed them: "
        "**foreign CPU**, the CPU time other processes took on the trial's CPUs during its measured steps per second "
        "of those steps, in % of one CPU (100% = one CPU busy with others the whole time; several CPUs can add up to "
        "more); **steal**, the seconds the hypervisor gave other guests in that window; and the 1-minute load average "
        "before and after the trial. A noisy row with foreign CPU and steal near zero is noisy by itself. ? marks a "
        "value not recorded (older rows, or /proc unreadable)."
    )
    columns = ["config", "forward ms", "backward ms", "optimizer ms", "step ms (mean ± std)"]
    # CV, flag and load stay last, where they were before foreign CPU and steal were recorded
    columns += ["foreign CPU (% of 1 CPU)", "steal s", "CV", "flag", "load"]
    return intro + "\n\n" + (md_table(columns, table) if table else "No ok rows.")


def projections(points: list[dict], tokens: float | None) -> str:
    """Per point, from its median step time over repeats."""
    columns = ["config", "median step s", f"{PROJECTION_STEPS:,} steps"]
    if tokens:
        columns += ["tokens/s", f"time for {tokens:,.0f} tokens"]
    table = []
    for p in (p for p in points if p["_ok"]):
        steps = seconds_and_duration(PROJECTION_STEPS * p["step_time_median_s"])
        line = [config(p), f"{p['step_time_median_s']:.4g}", steps]
        if tokens:
            tok = p.get("tokens_per_s")
            line += [f"{tok:,.0f}", seconds_and_duration(tokens / tok)] if is_positive(tok) else ["", ""]
        table.append(line)
    return f"## Projections\n\n{ASSUMPTIONS}\n\n" + (md_table(columns, table) if table else "No ok rows to project.")


def not_ok(rows: list[dict]) -> str:
    bad = [r for r in rows if not r["_ok"]]
    if not bad:
        return "## Trials that did not finish ok\n\nNone: every trial finished ok."
    table, multi_node = [], any(r.get("_node") for r in rows)
    for r in bad:
        reason = r.get("error") or ("ok but without a step time" if r.get("status") == "ok" else "no reason recorded")
        code = f" (exit code {r['exit_code']})" if r.get("exit_code") is not None else ""
        node = [r.get("_node")] if multi_node else []
        table.append([r.get("status"), r.get("study"), *node, point_text(r), str(reason)[:500] + code])
    title = f"## Trials that did not finish ok ({len(bad)})\n\n"
    return title + md_table(["status", "study", *(["node"] if multi_node else []), "point", "reason"], table)
