"""The report of one sweep: `<result>/report/<sweep>/index.md` with one PNG per study.

Per study a plot and table of median step time and tokens/s against its axis, with the segmented log-log fit (knee)
for numeric axes and speed-up, efficiency and an Amdahl fit for core counts; then a forward/backward/optimizer table
with noisy rows flagged, projections to 10,000 steps and to a token budget, and every trial that did not finish ok with
its reason. Rows written by older versions lack some columns: every column is read with .get() and may be None/NaN.

A sweep that ran on several nodes never mixes them in one curve or fit: each study gets one section per node (titled
"on host (ip)"), and an "Across nodes" section (sweep/compare.py) puts the nodes side by side first.
"""

from __future__ import annotations

import math
from pathlib import Path

from sweep.results.compare import CompareError, build_comparison, compare_markdown, group_rows, node_count
from sweep.results.fit import amdahl_fit, predict_segmented, segmented_fit, speedup_and_efficiency
from sweep.results.rows import (
    MAX_VALUE_TICKS,
    clean_row,
    is_number,
    is_positive,
    latest_sweep,
    log_if_wide,
    md_table,
    ms,
    plan_order,
    point_text,
    study_shape,
)
from sweep.results.store import EmptyStore, Store, slug

PROJECTION_STEPS = 10_000
CORE_AXES = ("cores", "threads")
FLAT_BEND = 0.1  # slopes closer than this in log-log are one straight line within step-time noise
ASSUMPTIONS = (
    "Assumptions: every step takes the steady-state median step time measured after warm-up (compile and cold start "
    "excluded); data loading, evaluation and checkpointing are excluded; one process on the cores this trial was "
    "pinned to, with nothing else running."
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
    studies: dict[str, list[dict]] = {}
    for row in rows:
        studies.setdefault(str(row.get("study")), []).append(row)
    studies = {name: study_shape(study_rows)[-1] for name, study_rows in studies.items()}
    nodes = split_by_node(rows)
    sections = [
        (name, node, [r for r in study_rows if r.get("_node") == node])
        for name, study_rows in studies.items()
        for node in nodes
    ]
    sections = [(name, node, section_rows) for name, node, section_rows in sections if section_rows]
    rows = [r for *_, section_rows in sections for r in section_rows]  # whole-sweep tables follow the sections
    parts = [header(sweep_id, rows)] + ([across_nodes(rows, out)] if len(nodes) > 1 else [])
    parts += [study_section(name, section_rows, out, node) for name, node, section_rows in sections]
    parts += [phase_table(rows, noisy_cv), projections(rows, tokens), not_ok(rows)]
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


def study_section(study: str, rows: list[dict], out: Path, node: str | None = None) -> str:
    """A study's plot, fits and table; `node`: the rows are one node's of a multi-node sweep, named in the title."""
    kind, x_axis, series, axes, rows = study_shape(rows)
    ok = [r for r in rows if r["_ok"] and (x_axis is None or is_number(r["_point"].get(x_axis)))]
    title = f"## Study `{study}`" + (f": {', '.join(axes)}" if axes else "") + (f" on {node}" if node else "")
    text = [title, ""]
    fit = scaling = None
    if kind == "line" and len({r["_point"][x_axis] for r in ok}) >= 3:
        fit = segmented_fit([r["_point"][x_axis] for r in ok], [r["step_time_median_s"] for r in ok])
        text += [knee_text(x_axis, fit, len(ok)), ""]
    if kind == "line" and (study == "cores" or x_axis in CORE_AXES):
        scaling = speedup_and_efficiency([r["_point"][x_axis] for r in ok], [r["step_time_median_s"] for r in ok])
        text += [scaling_text(x_axis, scaling, [r["_point"][x_axis] for r in ok], ok), ""]
    label = study + (f" on {node}" if node else "")
    png = out / f"{slug(study)}{f'-{slug(node)}' if node else ''}.png"
    plot_study(png, label, kind, x_axis, series, ok, fit, scaling)
    text += [f"![{label}]({png.name})", "", study_table(rows, axes)]
    return "\n".join(text)


def knee_text(axis: str, fit: dict, n_ok: int) -> str:
    if fit["knee_x"] is None:  # log-log drops values <= 0 (e.g. dropout=0): too few left for a knee
        slope = "" if fit["single_slope"] is None else f": slope {fit['single_slope']:.2f} in log-log"
        return f"**Fit** over the positive {axis} values{slope} ({fit['method']})."
    before, after = fit["slope_before"], fit["slope_after"]
    text = (
        f"**Knee** (segmented fit, two straight lines in log-log over {n_ok} ok points): {axis} ≈ {fit['knee_x']:.4g}, "
        f"slope {before:.2f} before and {after:.2f} after (step time ∝ {axis}^slope; R² {fit['r2']:.3f}; "
        f"one line has slope {fit['single_slope']:.2f}, the knee removes {fit['improvement']:.0%} of its residual)."
    )
    if abs(after - before) < FLAT_BEND:
        text += " The slopes barely differ: no clear bend."
    if "exact" in fit["method"]:
        text += " With 3 distinct values the fit passes through every point; more points would test it."
    return text


def scaling_text(axis: str, scaling: dict, cores: list, ok: list[dict]) -> str:
    amdahl = amdahl_fit(cores, [r["step_time_median_s"] for r in ok])
    table = md_table(
        [axis, "median step ms", "speed-up", "parallel efficiency"],
        [
            [p["cores"], ms(p["step_time_s"]), f"{p['speedup']:.2f}x", f"{p['efficiency']:.0%}"]
            for p in scaling["points"]
        ],
    )
    if amdahl["serial_fraction"] is None:
        fit_line = f"Amdahl fit: {amdahl['method']}."
    else:
        top = "unbounded" if math.isinf(amdahl["max_speedup"]) else f"{amdahl['max_speedup']:.2f}x"
        fit_line = (
            f"**Amdahl fit**: serial fraction s = {amdahl['serial_fraction']:.3f}, T1 = {ms(amdahl['t1_s'])} ms, "
            f"speed-up limit 1/s = {top} ({amdahl['method']})."
        )
    return f"Speed-up and parallel efficiency ({scaling['method']}):\n\n{table}\n\n{fit_line}"


def phase_text(row: dict) -> str:
    bend = row.get("bend_score")
    return (row.get("phase") or "grid") + (f" (bend score {bend:.3g})" if is_number(bend) else "")


def study_table(rows: list[dict], axes: list[str]) -> str:
    """Every row of the study, ratios to its first ok row (the smallest value of a numeric axis, else plan order)."""
    first = next((r for r in rows if r["_ok"]), None)
    table = []
    for r in rows:
        med, tok, ok = r.get("step_time_median_s"), r.get("tokens_per_s"), r["_ok"]
        lo, hi = r.get("step_time_min_s"), r.get("step_time_max_s")
        table.append(
            [r["_point"].get(a) for a in axes]
            + [
                phase_text(r),
                r.get("status"),
                ms(med) if ok else "",
                f"{ms(lo)}–{ms(hi)}" if ok and is_number(lo) and is_number(hi) else "",
                f"{r['step_time_cv']:.1%}" if ok and is_number(r.get("step_time_cv")) else "",
                f"{tok:,.0f}" if ok and is_number(tok) else "",
                f"{med / first['step_time_median_s']:.2f}x" if ok and first else "",
                f"{tok / first['tokens_per_s']:.2f}x"
                if ok and is_positive(tok) and is_positive(first.get("tokens_per_s"))
                else "",
                str(r.get("error") or "")[:80] if not ok else "",
            ]
        )
    columns = (axes or ["point"]) + ["phase", "status", "median ms", "min–max ms", "CV", "tokens/s"]
    if not axes:
        table = [["baseline", *t] for t in table]
    return md_table(columns + ["step time vs first", "tokens/s vs first", "reason"], table)


# ---- plots ----------------------------------------------------------------------------------------
def plot_study(png: Path, study, kind, x_axis, series, ok, fit, scaling) -> None:
    # Figure + Agg canvas, never pyplot: no display, no global figure registry to leak across studies.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = 3 if scaling and scaling["points"] else 2
    fig = Figure(figsize=(5.2 * panels, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    axs = fig.subplots(1, panels)
    fig.suptitle(f"study {study}")
    if not ok:
        for ax in axs:
            ax.set_axis_off()
        fig.text(0.5, 0.5, "no trial of this study finished ok", ha="center", va="center")
    elif kind == "bar":
        _bars(axs, ok)
    else:
        groups: dict = {}
        for r in ok:
            groups.setdefault(r["_point"].get(series) if series else None, []).append(r)
        for value, rows in groups.items():
            _lines(axs, x_axis, rows, f"{series}={value}" if series else None)
        if fit and fit.get("knee_x"):
            _fit_line(axs[0], fit, [r["_point"][x_axis] for r in ok])
        for ax in axs[:2]:
            ax.set_xlabel(x_axis)
            ax.legend(fontsize=7)
        xs = [r["_point"][x_axis] for r in ok]
        log_if_wide(axs[0], xs, [r["step_time_median_s"] for r in ok])
        log_if_wide(axs[1], xs, [r.get("tokens_per_s") for r in ok])
    if panels == 3:
        _speedup(axs[2], x_axis, scaling)
    axs[0].set_ylabel("median step time (s), bars min–max")
    axs[1].set_ylabel("tokens/s")
    fig.savefig(png, dpi=100)


def _err(rows: list[dict]) -> list[list[float]]:
    low = [max(0.0, r["step_time_median_s"] - (r.get("step_time_min_s") or r["step_time_median_s"])) for r in rows]
    high = [max(0.0, (r.get("step_time_max_s") or r["step_time_median_s"]) - r["step_time_median_s"]) for r in rows]
    return [low, high]


def _lines(axs, x_axis: str, rows: list[dict], label: str | None) -> None:
    rows = sorted(rows, key=lambda r: r["_point"][x_axis])
    xs = [r["_point"][x_axis] for r in rows]
    line = axs[0].plot(xs, [r["step_time_median_s"] for r in rows], "-", lw=1)[0]  # the markers carry the legend
    axs[1].plot(xs, [r.get("tokens_per_s") or math.nan for r in rows], "-", lw=1, color=line.get_color())
    for phase in dict.fromkeys(r.get("phase") or "grid" for r in rows):
        sel = [r for r in rows if (r.get("phase") or "grid") == phase]
        marker = "o" if phase == "grid" else "^"
        name = f"{phase} points" if label is None else f"{label} ({phase})"
        px = [r["_point"][x_axis] for r in sel]
        axs[0].errorbar(
            px,
            [r["step_time_median_s"] for r in sel],
            yerr=_err(sel),
            fmt=marker,
            color=line.get_color(),
            capsize=3,
            ms=6,
            label=name,
        )
        axs[1].plot(px, [r.get("tokens_per_s") or math.nan for r in sel], marker, color=line.get_color(), label=name)


def _fit_line(ax, fit: dict, xs: list) -> None:
    lo, hi = min(x for x in xs if is_positive(x)), max(xs)
    grid = [lo * (hi / lo) ** (i / 99) for i in range(100)]
    ax.plot(grid, predict_segmented(fit, grid), "--", color="grey", lw=1, label="segmented fit")
    ax.axvline(fit["knee_x"], color="red", ls=":", lw=1)
    ax.plot([fit["knee_x"]], [fit["knee_y"]], "x", color="red", ms=9, label=f"knee ≈ {fit['knee_x']:.4g}")


def _bars(axs, rows: list[dict]) -> None:
    labels = [point_text(r) for r in rows]
    colours = ["tab:orange" if r.get("phase") == "refine" else "tab:blue" for r in rows]
    axs[0].bar(labels, [r["step_time_median_s"] for r in rows], yerr=_err(rows), capsize=4, color=colours)
    axs[1].bar(labels, [r.get("tokens_per_s") or 0 for r in rows], color=colours)
    for ax in axs[:2]:
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)


def _speedup(ax, axis: str, scaling: dict) -> None:
    points, base = scaling["points"], scaling["baseline_cores"]
    cores = [p["cores"] for p in points]
    ax.plot(cores, [p["speedup"] for p in points], "o-", label="speed-up")
    ax.plot(cores, [c / base for c in cores], ":", color="grey", label="ideal")
    ax.set_xlabel(axis)
    if len(cores) <= MAX_VALUE_TICKS:
        ax.set_xticks(cores, [str(c) for c in cores])
    ax.set_ylabel(f"speed-up vs {base} {axis}")
    eff = ax.twinx()
    eff.plot(cores, [p["efficiency"] for p in points], "s--", color="tab:green", label="efficiency")
    eff.set_ylabel("parallel efficiency")
    eff.set_ylim(0, 1.1)
    (h1, l1), (h2, l2) = ax.get_legend_handles_labels(), eff.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="lower right", fontsize=7)


# ---- whole-sweep tables ---------------------------------------------------------------------------
def phase_table(rows: list[dict], noisy_cv: float) -> str:
    ok = [r for r in rows if r["_ok"]]
    table = []
    for r in ok:
        cv = r.get("step_time_cv")
        noisy = is_number(cv) and cv > noisy_cv
        load = " → ".join(f"{v:g}" if is_number(v) else "?" for v in (r.get("loadavg_before"), r.get("loadavg_after")))
        load = load if noisy else ""
        mean = r.get("step_time_mean_s") if is_number(r.get("step_time_mean_s")) else r["step_time_median_s"]
        table.append(
            [
                config(r),
                ms(r.get("forward_s"), r.get("forward_std_s")),
                ms(r.get("backward_s"), r.get("backward_std_s")),
                ms(r.get("optimizer_s"), r.get("optimizer_std_s")),
                ms(mean, r.get("step_time_std_s")),
                f"{cv:.1%}" if is_number(cv) else "",
                "noisy" if noisy else "",
                load,
            ]
        )
    flagged = sum(1 for t in table if t[6])
    intro = (
        f"## Forward / backward / optimizer\n\nMean per step ± std over the measured steps, in ms. {flagged} of "
        f"{len(table)} ok rows are flagged noisy (CV > {noisy_cv:.0%}); for those the 1-minute load average before "
        "and after the trial shows whether the machine was busy."
    )
    columns = ["config", "forward ms", "backward ms", "optimizer ms", "step ms (mean ± std)", "CV", "flag", "load"]
    return intro + "\n\n" + (md_table(columns, table) if table else "No ok rows.")


def projections(rows: list[dict], tokens: float | None) -> str:
    columns = ["config", "median step s", f"{PROJECTION_STEPS:,} steps"]
    if tokens:
        columns += ["tokens/s", f"time for {tokens:,.0f} tokens"]
    table = []
    for r in (r for r in rows if r["_ok"]):
        steps = r.get("projected_10k_steps_s")
        steps = steps if is_positive(steps) else PROJECTION_STEPS * r["step_time_median_s"]
        line = [config(r), f"{r['step_time_median_s']:.4g}", seconds_and_duration(steps)]
        if tokens:
            tok = r.get("tokens_per_s")
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
