"""The plots of one study in the report: median step time (error bars: the 95% confidence interval) and tokens/s
against the study's axis, the segmented fit where the points support a knee, and speed-up for core counts."""

from __future__ import annotations

import math
from pathlib import Path

from sweep.results.fit import predict_segmented
from sweep.results.rows import MAX_VALUE_TICKS, is_positive, log_if_wide, point_text


def plot_study(png: Path, study, kind, x_axis, series, ok, fit, scaling, reference: dict | None = None) -> None:
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
    if reference and ok:
        # the figure another report claimed for this setting: a labelled horizontal line
        for ax, figure in ((axs[0], "step_time_s"), (axs[1], "tokens_per_s")):
            if reference.get(figure):
                ax.axhline(reference[figure], color="tab:red", ls="--", lw=1, label=f"reference: {reference['label']}")
                ax.legend(fontsize=7)
    axs[0].set_ylabel("median step time over repeats (s), bars: 95% CI")
    axs[1].set_ylabel("tokens/s")
    fig.savefig(png, dpi=100)


def _err(points: list[dict]) -> list[list[float]]:
    """Error bars = each point's 95% confidence interval (no bar where it has none)."""
    intervals = [(p["_estimate"].low_s, p["_estimate"].high_s, p["step_time_median_s"]) for p in points]
    low = [0.0 if lo is None else max(0.0, med - lo) for lo, _, med in intervals]
    high = [0.0 if hi is None else max(0.0, hi - med) for _, hi, med in intervals]
    return [low, high]


def _lines(axs, x_axis: str, rows: list[dict], label: str | None) -> None:
    rows = sorted(rows, key=lambda r: r["_point"][x_axis])
    xs = [r["_point"][x_axis] for r in rows]
    line = axs[0].plot(xs, [r["step_time_median_s"] for r in rows], "-", lw=1)[0]  # the markers carry the legend
    axs[1].plot(xs, [r.get("tokens_per_s") or math.nan for r in rows], "-", lw=1, color=line.get_color())
    for phase in dict.fromkeys(r.get("phase") or "grid" for r in rows):
        sel = [r for r in rows if (r.get("phase") or "grid") == phase]
        marker = "o" if phase == "grid" else "^"
        name = f"{phase} points, 95% CI" if label is None else f"{label} ({phase}, 95% CI)"
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
