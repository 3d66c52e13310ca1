#!/usr/bin/env python3
"""Precision per minute: what one run of a plan (a result directory's newest sweep) resolved in its wall time, and
how far two runs agree.

    venv/bin/python benchmarks/precision.py RESULT_DIR [RESULT_DIR_B]

For each run: its wall time (result/wall_time/<sweep>.json: every `bench.py run` of the sweep), the share inside
warm-up + measured steps and the median fixed cost per trial as the closing line and the breakdown report them, the
number of step-time ratios and the median half-width of their 95% intervals (ratios with a side measured once left
out: sweep/results/resolution.py), the minimum detectable effect per study, and the racing decisions. With two runs:
for every ratio both hold (same study and point), |ratio B / ratio A - 1|, its median and its largest.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sweep.results.resolution import per_study, ratio_lines, sweep_budget  # noqa: E402
from sweep.results.rows import latest_sweep  # noqa: E402
from sweep.results.store import Store  # noqa: E402
from sweep.results.wall_time import load_breakdowns  # noqa: E402


def run_figures(result_dir: Path) -> tuple[str, list]:
    store = Store(result_dir)
    sweep = latest_sweep(store)
    budget = sweep_budget(result_dir, sweep)
    lines = ratio_lines(store.rows(sweep), budget)
    runs = load_breakdowns(result_dir, sweep)
    total = sum(run["total_s"] for run in runs)
    steps = sum(run["total_s"] * run.get("steps_share", 0) for run in runs)
    fixed = [run["fixed_median_s"] for run in runs if run.get("fixed_median_s") is not None]
    widths = [x.half_width for x in lines if x.half_width is not None]
    print(f"{result_dir} ({sweep}):")
    print(
        f"  wall {total:.0f} s over {len(runs)} run(s); {steps:.0f} s ({steps / total:.0%}) inside warm-up + measured "
        f"steps; median fixed cost per trial {statistics.median(fixed) if fixed else float('nan'):.2f} s"
    )
    print(
        f"  {len(lines)} ratios, {len(widths)} with repeats on both sides: median 95% half-width "
        f"±{statistics.median(widths):.1%} (min ±{min(widths):.1%}, max ±{max(widths):.1%}); repeats per point "
        f"median {statistics.median(x.repeats for x in lines):.0f}"
    )
    print("  minimum detectable effect per study: " + ", ".join(f"{s} ±{m:.1%}" for s, m, n in per_study(lines) if n))
    if budget:
        verdicts: dict[str, int] = {}
        for x in lines:
            if x.decision is not None:
                key = x.decision.verdict
                verdicts[key] = verdicts.get(key, 0) + 1
        print(
            f"  budget {budget['seconds']:.0f} s, spent {budget['spent_s']:.0f} s, {budget['rounds']} rounds, ended: "
            f"{budget['stopped']}; decisions: {verdicts}; components: {budget['components']}"
        )
    return sweep, lines


def main(argv: list[str]) -> int:
    runs = [run_figures(Path(d)) for d in argv]
    if len(runs) == 2:
        a = {(x.study, x.config_key): x for x in runs[0][1]}
        b = {(x.study, x.config_key): x for x in runs[1][1]}
        common = sorted(set(a) & set(b))
        diffs = {key: abs(b[key].ratio / a[key].ratio - 1) for key in common}
        print(
            f"two runs: {len(common)} ratios in both; median |ratio B / ratio A - 1| "
            f"{statistics.median(diffs.values()):.1%}, largest {max(diffs.values()):.1%}"
        )
        for key, d in sorted(diffs.items(), key=lambda kv: -kv[1])[:5]:
            print(f"  {a[key].study:16s} {a[key].point:28s} A {a[key].ratio:.3f}x  B {b[key].ratio:.3f}x  {d:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
