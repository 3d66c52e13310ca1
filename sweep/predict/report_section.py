"""The report's "Predicting step time" section: the model's efficiencies per node and class (fitted on the report's
rows), how well it predicts configs it did not see (leave one config out, and the two cross checks), and a plot of
predicted against measured step time."""

from __future__ import annotations

from pathlib import Path

from sweep.predict.features import CLASSES
from sweep.predict.fit import MAX_FOREIGN_SHARE, StorePoints, fit_points, store_points
from sweep.predict.model import group_name
from sweep.predict.validate import Check, percent, summary, validate
from sweep.results.rows import md_table

TITLE = "## Predicting step time"
PNG = "predicted-vs-measured.png"
EXPLAIN = (
    "A model of the step time fitted on these rows (`bench.py predict`, README): per class of operation, time = work "
    "/ (efficiency × the node's roof): the matmul and attention FLOPs over the node's matmul peak, the element-wise "
    "and optimizer bytes over its triad bandwidth, plus a fixed time per layer pass. The efficiencies are fitted per "
    "node and framework × precision by non-negative least squares on relative errors (one point per config: the "
    "median of its ok rows). A class the fit gave no time shows –; where the configs' work does not vary enough to "
    "split the time between classes (one config, or one model at several settings), the fit leans to one common "
    "efficiency for every class. Leave one config out: each config is held out "
    "with all its rows, refitted without it and predicted; the cross checks fit on one side (no ISA cap; 1 thread) "
    "and predict the other (isa=avx2 from its capped peak; the same configs at 2 threads). Errors are |predicted − "
    f"measured| / measured. Rows whose measured steps shared their CPUs with other work (over "
    f"{MAX_FOREIGN_SHARE:.0%} of their threads' time) are left out."
)


def prediction_section(rows: list[dict], out: Path) -> str:
    """The Markdown section; writes predicted-vs-measured.png into out where a config was predicted."""
    store = store_points(rows)
    if not any(store.points.values()):
        return f"{TITLE}\n\nNo ok row to fit the model on."
    checks = validate(store)
    parts = [TITLE, EXPLAIN, efficiency_table(store), checks_table(checks)]
    if checks[0].errors():
        out.mkdir(parents=True, exist_ok=True)
        plot_predicted(out / PNG, checks[0])
        parts.append(f"![predicted against measured step time, leave one config out]({PNG})")
    left = sum(store.disturbed.values())
    if left:
        parts.append(f"{left} ok rows left out as disturbed.")
    return "\n\n".join(parts)


def efficiency_table(store: StorePoints) -> str:
    columns = ["node", "framework × precision", "configs", *(f"{c} efficiency" for c in CLASSES[:-1])]
    columns.append("per layer pass (ms)")
    table = []
    for node, points in store.points.items():
        groups: dict = {}
        for p in points:
            groups.setdefault(p.group, []).append(p)
        for group, members in sorted(groups.items()):
            efficiencies = fit_points(members).efficiencies()
            cells = [percent(efficiencies[c]) for c in CLASSES[:-1]]
            table.append([node, group_name(group), len(members), *cells, f"{efficiencies['layer'] * 1e3:.2f}"])
    return md_table(columns, table)


def checks_table(checks: list[Check]) -> str:
    table = []
    for check in checks:
        for node in check.held:
            s = summary(check.errors(node))
            table.append(
                [check.name, node, s["configs"], len(check.refused(node)), percent(s["median"]), percent(s["p90"])]
            )
        if not check.held:
            table.append([check.name, "", 0, 0, "no rows for this check", ""])
    return md_table(["check", "node", "configs predicted", "refused", "median error", "p90 error"], table)


def plot_predicted(png: Path, check: Check) -> None:
    """Predicted against measured step time, log-log, one colour per framework × precision, with y = x."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig = Figure(figsize=(5.5, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    groups: dict = {}
    for held in check.held.values():
        for h in held:
            if h.predicted_s is not None:
                groups.setdefault(group_name(h.point.group), []).append((h.point.measured_s, h.predicted_s))
    values = [v for pairs in groups.values() for pair in pairs for v in pair]
    low, high = min(values) / 1.3, max(values) * 1.3
    ax.plot([low, high], [low, high], color="grey", lw=1, ls="--", label="y = x")
    for name, pairs in sorted(groups.items()):
        ax.scatter([m for m, _ in pairs], [p for _, p in pairs], s=18, label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    for axis in (ax.xaxis, ax.yaxis):  # plain seconds; log minor ticks labelled in 10^x overlap
        axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("measured step time (s)")
    ax.set_ylabel("predicted step time (s), config held out")
    s = summary(check.errors())
    ax.set_title(f"leave one config out: median {percent(s['median'])}, p90 {percent(s['p90'])}", fontsize=9)
    ax.legend(fontsize=7)
    fig.savefig(png, dpi=110)
