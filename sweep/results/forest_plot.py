"""The findings' forest plot: one row per ratio, its point estimate and 95% interval on a log axis, the line at 1.0."""

from __future__ import annotations

import math
from pathlib import Path

NICE_TICKS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.5, 2, 3, 5, 10, 20, 50, 100, 200)
XLABEL = "step time vs the study's reference (log; left of 1.0 is faster), bars: 95% CI"
ROW_INCHES = 0.32  # tall enough for a 9-point label, short enough that ten findings fit the report's first screen


def plot_forest(
    png: Path, title: str, labels: list[str], ratios: list[float], lows: list, highs: list, xlabel: str = XLABEL
) -> None:
    """Ratios (point / reference step time) with their intervals, the first label on top; None bounds: no bar."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    fig = Figure(figsize=(7.5, 0.9 + ROW_INCHES * max(len(labels), 1)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ys = list(range(len(labels)))[::-1]
    below = [r - lo if lo is not None else 0.0 for r, lo in zip(ratios, lows, strict=True)]
    above = [hi - r if hi is not None else 0.0 for r, hi in zip(ratios, highs, strict=True)]
    colours = ["tab:green" if r < 1 else "tab:red" for r in ratios]
    for x, y, lo, hi, colour in zip(ratios, ys, below, above, colours, strict=True):  # errorbar takes one colour
        ax.errorbar([x], [y], xerr=[[lo], [hi]], fmt="none", ecolor=colour, elinewidth=1.6, capsize=3)
    ax.scatter(ratios, ys, c=colours, s=22, zorder=3)
    ax.axvline(1.0, color="black", lw=0.8)
    ax.set_xscale("log")
    bounds = [v for v in (*ratios, *(x for x in lows if x), *(x for x in highs if x)) if v and v > 0]
    left, right = min(bounds + [1.0]), max(bounds + [1.0])
    pad = math.exp(0.08 * max(math.log(right / left), 0.1))
    ax.set_xlim(left / pad, right * pad)
    ticks = [1.0]  # then outward from it, each far enough from those kept to read
    for t in sorted(NICE_TICKS, key=lambda t: abs(math.log(t))):
        if left / pad <= t <= right * pad and all(
            abs(math.log(t / k)) > math.log(right * pad * pad / left) / 14 for k in ticks
        ):
            ticks.append(t)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.tick_params(axis="x", labelsize=8)
    ax.set_yticks(ys, labels, fontsize=9)
    ax.set_ylim(-0.7, len(labels) - 0.3)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", which="both", alpha=0.25)
    fig.savefig(png, dpi=100)
