"""The report's "Roofline" section: per node, every ok trial at its arithmetic intensity (matmul FLOPs per modelled
byte of memory traffic, trainables/traffic.py) against the GFLOP/s it attained, under the node's roofs
min(peak, intensity x bandwidth), one roof per threads and dtype; and how many trials each roof binds.

Rows of stores older than the roofline columns get them from their config (trainables/roofline.roofline_from_row),
at the bandwidth they recorded (the node's triad at all its cores, `hw_mem_bw_gbs`, where the trial's own is absent);
a row lacking its peak, step time or any bandwidth is left out, and the section says how many were.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from sweep.results.rows import is_positive
from sweep.results.store import slug
from trainables.roofline import MEMORY, roof, roofline_from_row

TITLE = "## Roofline"
EXPLAIN = (
    "Each ok trial at its arithmetic intensity (`arithmetic_intensity`: matmul FLOPs per byte the traffic model of "
    "`trainables/traffic.py` says one step moves between memory and the cores) and the GFLOP/s it attained "
    "(`achieved_gflops`), under the roof min(`peak_gflops`, intensity × triad bandwidth at the trial's threads). "
    "'Memory-bound': the intensity lies left of the ridge (peak / bandwidth). The model counts every tensor as moving "
    "to memory, so a step whose tensors stay in cache can sit above its memory roof."
)


def roofline_point(row: dict) -> dict | None:
    """{node, study, threads, dtype, intensity, gflops, peak, bandwidth, fraction, bound} of an ok row: from its
    columns, else computed from its config; None where neither is possible."""
    if row.get("status") != "ok":
        return None
    stored = all(is_positive(row.get(c)) for c in ("arithmetic_intensity", "roofline_bandwidth_gbs", "peak_gflops"))
    values = row if stored else roofline_from_row(row)
    if values is None or not is_positive(values.get("arithmetic_intensity")):
        return None
    fraction = values.get("roofline_fraction")
    if not is_positive(fraction):
        return None
    return {
        "node": str(row.get("_node") or row.get("host")),
        "study": str(row.get("study")),
        "threads": row.get("threads"),
        "dtype": str(row.get("peak_dtype") or "fp32"),
        "intensity": values["arithmetic_intensity"],
        "gflops": fraction * values["roofline_gflops"],  # the attained rate, from the same FLOPs as the intensity
        "peak": row["peak_gflops"],
        "bandwidth": values["roofline_bandwidth_gbs"],
        "fraction": fraction,
        "bound": values["roofline_bound"],
    }


def roofline_section(rows: list[dict], out: Path) -> str:
    """The Markdown section with one PNG per node written into `out`."""
    ok = [r for r in rows if r.get("status") == "ok"]
    points = [p for p in (roofline_point(r) for r in ok) if p is not None]
    left_out = len(ok) - len(points)
    skipped = f" {left_out} ok trial(s) left out: no peak, step time or bandwidth to place them by." if left_out else ""
    if not points:
        return f"{TITLE}\n\nNo ok trial could be placed on a roofline.{skipped}"
    parts = [TITLE, EXPLAIN + skipped]
    for node in sorted({p["node"] for p in points}):
        mine = [p for p in points if p["node"] == node]
        png = out / f"roofline-{slug(node)}.png"
        plot_roofline(png, node, mine)
        memory = sum(p["bound"] == MEMORY for p in mine)
        median = statistics.median(p["fraction"] for p in mine)
        parts += [
            f"**{node}**: {len(mine)} trials, {memory} memory-bound and {len(mine) - memory} compute-bound; median "
            f"fraction of the roof {median:.1%}.",
            f"![roofline {node}]({png.name})",
        ]
    return "\n\n".join(parts)


def roofs(points: list[dict]) -> dict[tuple, tuple[float, float]]:
    """{(threads, dtype): (median peak GFLOP/s, median bandwidth GB/s)} of the node's trials."""
    groups: dict[tuple, list[dict]] = {}
    for p in points:
        groups.setdefault((p["threads"], p["dtype"]), []).append(p)
    return {
        key: (statistics.median(p["peak"] for p in group), statistics.median(p["bandwidth"] for p in group))
        for key, group in sorted(groups.items(), key=lambda kv: str(kv[0]))
    }


def plot_roofline(png: Path, node: str, points: list[dict]) -> None:
    # Figure + Agg canvas, never pyplot: no display, no global figure registry (as sweep/results/report_plot.py)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = 1 + len({p["study"] for p in points}) // 24  # legend columns beside the axes
    fig = Figure(figsize=(7.5 + 2.2 * columns, 5.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    node_roofs = roofs(points)
    ridges = [peak / bandwidth for peak, bandwidth in node_roofs.values()]
    intensities = [p["intensity"] for p in points]
    low, high = min(intensities + ridges) / 4, max(intensities + ridges) * 4
    xs = [low * (high / low) ** (i / 200) for i in range(201)]
    for i, ((threads, dtype), (peak, bandwidth)) in enumerate(node_roofs.items()):
        ax.plot(  # roofs grey, told apart by dash: the colours are the studies'
            xs,
            [roof(x, peak, bandwidth)[0] for x in xs],
            color="0.35",
            lw=1.2,
            ls=("--", ":", "-.", (0, (5, 1, 1, 1)))[i % 4],
            label=f"roof {threads} threads {dtype}: {peak:.0f} GFLOP/s, {bandwidth:.1f} GB/s",
        )
    studies = sorted({p["study"] for p in points})
    for i, study in enumerate(studies):
        mine = [p for p in points if p["study"] == study]
        # ten colours, then the next marker: a full plan has ~50 studies
        marker = ("o", "s", "^", "D", "v", "P")[i // 10 % 6]
        xs, ys = [p["intensity"] for p in mine], [p["gflops"] for p in mine]
        ax.scatter(xs, ys, s=18, color=f"C{i % 10}", marker=marker, label=study)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (matmul FLOP per modelled byte)")
    ax.set_ylabel("GFLOP/s attained")
    ax.set_title(f"roofline: {node}")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), ncol=columns)
    fig.savefig(png, dpi=100)
