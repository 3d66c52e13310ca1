"""What a comparison across hosts found, first: each host's overall speed against the reference, the configs where a
host differs from the reference beyond the 95% interval (ranked by size, a table and a forest plot), how many
configs differ by less than the noise, and the fastest host. Intervals are the comparison's own
(Comparison.speedup_interval: both cells must pool two or more rows); a config measured once on either side is
counted, never listed as a finding.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from sweep.results.comparison import Comparison
from sweep.results.forest_plot import plot_forest
from sweep.results.rows import md_table, point_text

FIRST_SCREEN = 8
XLABEL = "step time vs the reference host (log; left of 1.0 is faster), bars: 95% CI"


def compare_findings(c: Comparison, out: Path, level: int = 2) -> str:
    """The Findings part of a comparison (Markdown at heading `level`); its forest plot goes into out."""
    text = [f"{'#' * level} Findings", ""]
    overall = []
    for g in c.labels:
        ratios = [s for k in c.compared if (s := c.speedup(k, g))]
        if g != c.ref and ratios:
            overall.append((g, statistics.geometric_mean(ratios), len(ratios)))
    if not overall:
        return "\n".join(text + [f"No config ran ok on {c.ref} and another {c.by}: nothing to compare."])
    for g, mean, n in sorted(overall, key=lambda x: -x[1]):
        way = "faster" if mean > 1 else "slower"
        text.append(f"- **{g}** is {max(mean, 1 / mean):.2f}x {way} than {c.ref} (geometric mean over {n} configs).")
    fastest = max([(c.ref, 1.0)] + [(g, m) for g, m, _ in overall], key=lambda x: x[1])[0]
    text += [f"- Fastest {c.by} over the shared configs: **{fastest}**.", ""]
    effects, quiet, once = [], 0, 0
    for key in c.compared:
        for g in c.labels[1:]:
            interval = c.speedup_interval(key, g)
            if c.speedup(key, g) is None:
                continue
            if interval is None or interval.low is None:
                once += 1
            elif interval.measurable:
                effects.append((key, g, interval))
            else:
                quiet += 1
    effects.sort(key=lambda e: -abs(math.log(e[2].value)))
    text.append(
        f"{len(effects)} config(s) differ from {c.ref} beyond the 95% interval; {quiet} differ by less than the "
        f"noise (no measurable effect); {once} were measured once on a side, so they have no interval and are not "
        "findings."
    )
    if effects:
        shown = effects[:FIRST_SCREEN]
        rows = [
            [i + 1, g, key[0], point_text({"_point": c.points[key]}), ratio_text(iv)]
            for i, (key, g, iv) in enumerate(effects)
        ]
        labels = [f"{g}: {point_text({'_point': c.points[key]})}" for key, g, _ in shown]
        step = [1 / iv.value for *_, iv in shown]  # speed-up is ref / host: the plot shows host / ref, as the report
        plot_forest(
            out / "compare-findings.png", f"vs {c.ref}", labels, step,
            [1 / iv.high for *_, iv in shown], [1 / iv.low for *_, iv in shown], xlabel=XLABEL,
        )  # fmt: skip
        text += ["", md_table(["#", c.by, "study", "point", "speed-up vs ref (95% CI)"], rows), ""]
        text.append(f"![forest plot: each {c.by} vs {c.ref}](compare-findings.png)")
    return "\n".join(text)


def ratio_text(interval) -> str:
    way = "faster" if interval.value > 1 else "slower"
    return f"{interval.value:.2f}x ({interval.low:.2f}–{interval.high:.2f}), {way}"
