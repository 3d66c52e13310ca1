"""The plot of one study across hosts: median step time against the study's axis, one line per host.

One numeric axis: its values on x, sorted. Two axes of which one is numeric (a grid study): the numeric one on x and
one line per host and value of the other (same colour per host, a marker and dash per value). Anything else
(categorical axes, several axes): the configs as categories on x in plan order, each host's markers side by side in
its colour, unjoined because categories have no order.
"""

from __future__ import annotations

from pathlib import Path

from sweep.results.rows import is_number, log_if_wide, point_text, study_shape

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
DASHES = ("-", "--", ":", "-.")


def plot_across(png: Path, study: str, by: str, lines: dict[str, list[tuple[dict, float]]]) -> None:
    """lines: group label -> (point, median step time in s) of each ok config the group ran."""
    # Figure + Agg canvas, never pyplot: no display, no global figure registry (as report.py)
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
            xy = sorted(zip(xs, (y for _, y in sel), strict=True))
            name = label + (f", {series}={value}" if series else "")
            dash = DASHES[j % len(DASHES)] if x_axis else "none"  # no line between categories: they have no order
            ax.plot(
                [x for x, _ in xy],
                [y for _, y in xy],
                marker=MARKERS[j % len(MARKERS)],
                ls=dash,
                color=colour,
                label=name,
            )
            xs_all += [x for x, _ in xy] if x_axis else []
            ys_all += [y for _, y in xy]
    log_if_wide(ax, xs_all, ys_all)
    if categories:
        ax.set_xticks(range(len(categories)), categories, rotation=30, ha="right", fontsize=8)
        ax.set_xlim(-0.5, len(categories) - 0.5)
    ax.set_xlabel(x_axis or (axes[0] if len(axes) == 1 else "config"))
    ax.set_ylabel("median step time (s)")
    ax.set_title(
        f"study {study}: step time per {by}" + (f" ({kind} study, lines per {series} value)" if series else "")
    )
    ax.legend(fontsize=7)
    fig.savefig(png, dpi=100)


def _category(point: dict, axes: list[str]) -> str:
    return str(point.get(axes[0])) if len(axes) == 1 else point_text({"_point": point})
