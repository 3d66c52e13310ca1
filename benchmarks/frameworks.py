#!/usr/bin/env python3
"""Each framework and matmul backend against torch eager at the same model size, from one sweep of the frameworks
plan (sweep/plans/frameworks.yaml):

    venv/bin/python bench.py run --plan frameworks --result-dir result/frameworks
    venv/bin/python benchmarks/frameworks.py result/frameworks [--sweep ID]

For every (model size, framework, blas) point: the median step time over its repeats with its 95% interval
(sweep/results/stats.py), its ratio to torch eager with mkl at the same size with the ratio's interval and verdict,
MFU (against the framework's own matmul peak, recorded in the row), the backend read back (blas_used), the compile
time of the first step and the per-trial CV. Points several studies share are counted once.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sweep.results.rows import clean_row, latest_sweep, md_table, point_rows  # noqa: E402
from sweep.results.stats import ratio_to_reference  # noqa: E402
from sweep.results.store import Store  # noqa: E402

SIZE_KEYS = ("depth", "width", "heads", "batch_size")


def size_of(row: dict) -> str:
    return " ".join(f"{key}={row[key]}" for key in SIZE_KEYS)


def table(rows: list[dict]) -> str:
    # one point per config: a config several studies share was measured once (the copies name it in shared_from)
    points = [p for p in point_rows([r for r in rows if not r.get("shared_from")]) if p["_ok"]]
    lines = []
    for size in dict.fromkeys(size_of(p) for p in points):
        here = [p for p in points if size_of(p) == size]
        reference = next(p for p in here if (p["framework"], p["blas"], p["compile"]) == ("torch", "mkl", "eager"))
        seen = set()
        for p in sorted(here, key=lambda p: (p["framework"] != "torch", p["framework"], p["blas"])):
            if p["config_key"] in seen:
                continue
            seen.add(p["config_key"])
            ratio = ratio_to_reference(p["_estimate"], reference["_estimate"]) if p is not reference else None
            mfus = [r["mfu"] for r in p["_repeats"] if r.get("mfu")]
            compile_s = [r["compile_s"] for r in p["_repeats"] if r.get("compile_s") is not None]
            estimate = p["_estimate"]
            interval = f"{estimate.low_s * 1e3:.1f}–{estimate.high_s * 1e3:.1f}" if estimate.low_s else ""
            lines.append(
                [
                    size,
                    f"{p['framework']} {p['compile']}",
                    f"{p['blas']} ({p.get('blas_used')})",
                    f"{estimate.median_s * 1e3:.1f} ({interval})",
                    "1.00 (reference)" if ratio is None else f"{ratio.text()} {ratio.verdict()}",
                    f"{statistics.median(mfus):.1%}" if mfus else "",
                    f"{statistics.median(compile_s):.2f}" if compile_s else "",
                    f"{p['step_time_cv']:.1%}" if p.get("step_time_cv") is not None else "",
                    len(p["_repeats"]),
                ]
            )
    columns = [
        "model",
        "framework",
        "blas asked (ran)",
        "step ms (95% CI)",
        "× torch eager",
        "MFU",
        "compile s",
        "CV",
        "n",
    ]
    return md_table(columns, lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("result_dir", type=Path)
    parser.add_argument("--sweep", help="the sweep id (default: the newest in the store)")
    args = parser.parse_args()
    store = Store(args.result_dir)
    sweep = args.sweep or latest_sweep(store)
    rows = [clean_row(r) for r in store.rows(sweep)]
    print(f"sweep {sweep}: {len(rows)} rows\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
