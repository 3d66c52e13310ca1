"""The plot of one study across hosts: median step time against the study's axis, one line per host.

One numeric axis: its values on x, sorted. Two axes of which one is numeric (a grid study): the numeric one on x and
one line per host and value of the other (same colour per host, a marker and dash per value). Anything else
(categorical axes, several axes): the configs as categories on x in plan order, each host's markers side by side in
its colour, unjoined because categories have no order. Error bars: the 95% confidence interval of a cell that pools
several rows (none for a single row).
"""

from __future__ import annotations

from pathlib import Path

from sweep.results.comparison import Cell
from sweep.results.rows import is_number, log_if_wide, point_text, study_shape

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
DASHES = ("-", "--", ":", "-.")


def plot_across(png: Path, study: str, by: str, lines: dict[str, list[tuple[dict, Cell]]]) -> None:
    """lines: group label -> (point, its cell: median step time in s over the rows, their count and interval) of each
    ok config the group ran."""
    # Figure + Agg canvas, never pyplot: no display, no global figure registry (as report_plot.py)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    kind, x_axis, series, axes, _ = study_shape([{"_point": p} for pts in lines.values() for p, _ in pts])
    categories = [] if x_axis else list(dict.fromkeys(_category(p, axes) for pts in lines.values() for p, _ in pts))
    xs_all, ys_all = [], []
    lines = {label: points for label, points in lines.items() if points}
    for i, (label, points) in enumerate(lines.items()):
        colour, shift = f"C{i % 10}", (i - (len(lines) - 1) / 2) * 0.06  # side by side within a category
        values = list(dict.fromkeys(p.get(series) for p, _ in points)) if series else [None]
        for j, value in enumerate(values):
            sel = [(p, y) for p, y in points if (series is None or p.get(series) == value)]
            sel = [(p, y) for p, y in sel if x_axis is None or is_number(p.get(x_axis))]  # e.g. a baseline point
            xs = (
                [p[x_axis] for p, _ in sel]
                if x_axis
                else [categories.index(_category(p, axes)) + shift for p, _ in sel]
            )
            xy = sorted(zip(xs, (cell for _, cell in sel), strict=True), key=lambda pair: pair[0])
            name = label + (f", {series}={value}" if series else "")
            dash = DASHES[j % len(DASHES)] if x_axis else "none"  # no line between categories: they have no order
            ax.errorbar(
                [x for x, _ in xy],
                [cell.step_time_s for _, cell in xy],
                yerr=_interval_bars([cell for _, cell in xy]),
                marker=MARKERS[j % len(MARKERS)],
                ls=dash,
                color=colour,
                capsize=3,
                label=name,
            )
            xs_all += [x for x, _ in xy] if x_axis else []
            ys_all += [cell.step_time_s for _, cell in xy]
    log_if_wide(ax, xs_all, ys_all)
    if categories:
        ax.set_xticks(range(len(categories)), categories, rotation=30, ha="right", fontsize=8)
        ax.set_xlim(-0.5, len(categories) - 0.5)
    ax.set_xlabel(x_axis or (axes[0] if len(axes) == 1 else "config"))
    ax.set_ylabel("median step time (s), bars: 95% CI where rows repeat")
    ax.set_title(
        f"study {study}: step time per {by}" + (f" ({kind} study, lines per {series} value)" if series else "")
    )
    ax.legend(fontsize=7)
    fig.savefig(png, dpi=100)


def _interval_bars(cells: list[Cell]) -> list[list[float]]:
    """Below/above each median: its 95% interval where the cell pools several rows, else no bar."""
    shown = [c.estimate if c.rows > 1 and c.estimate.low_s is not None else None for c in cells]
    low = [0.0 if e is None else max(0.0, c.step_time_s - e.low_s) for c, e in zip(cells, shown, strict=True)]
    high = [0.0 if e is None else max(0.0, e.high_s - c.step_time_s) for c, e in zip(cells, shown, strict=True)]
    return [low, high]


def _category(point: dict, axes: list[str]) -> str:
    return str(point.get(axes[0])) if len(axes) == 1 else point_text({"_point": point})
