"""The report's "Against the machine's limit" section: per node, how far each framework's matmul (the peak its `mfu`
divides by) is from the machine's best measured matmul (`machine_peak_gflops`, the fastest installed library at the
same threads and dtype) and from the CPU's theoretical peak, and the medians of the three efficiencies of its rows.

`mfu` divides each framework by its own library, so a framework whose library is slow looks efficient; the
machine-relative efficiency divides every framework on a node by the same figure, so its order is the order of the
step times (for the same FLOPs). Rows from before these columns, or whose machine peak was not measured, are left out.
"""

from __future__ import annotations

import statistics
from collections import Counter

from sweep.results.rows import is_positive, md_table

TITLE = "## Against the machine's limit"
EXPLAIN = (
    "Per node, threads and dtype: each framework's own matmul (what `mfu` divides by, with the library that ran it) "
    "beside the machine's best measured matmul (the fastest of torch.mm, oneDNN fp32 IEEE, NumPy's BLAS and XLA at "
    "the same threads, CPUs and dtype) and the theoretical peak (FMA units × lanes × 2 × clock × cores; "
    "`theoretical_peak_method` says which clock). 'of best' is the framework's matmul over the machine's best: below "
    "100% its library leaves speed on the table. The efficiencies are medians over the framework's ok rows: "
    "`efficiency_vs_machine_peak` uses the same divisor for every framework, unlike `mfu`."
)


def _median(rows: list[dict], column: str) -> float | None:
    values = [r[column] for r in rows if is_positive(r.get(column))]
    return statistics.median(values) if values else None


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


def _gflops(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def efficiency_groups(rows: list[dict]) -> dict[tuple, list[dict]]:
    """{(node, threads, peak_dtype, framework, blas): ok rows that carry machine_peak_gflops}, in a stable order."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("status") != "ok" or not is_positive(r.get("machine_peak_gflops")):
            continue
        node = r.get("_node") or r.get("host")
        key = (str(node), r.get("threads"), str(r.get("peak_dtype")), str(r.get("framework")), str(r.get("blas")))
        groups.setdefault(key, []).append(r)
    return dict(sorted(groups.items(), key=lambda kv: tuple(str(k) for k in kv[0])))


def efficiency_section(rows: list[dict]) -> str:
    """The Markdown section; a one-line note where no row carries a machine peak."""
    groups = efficiency_groups(rows)
    if not groups:
        return f"{TITLE}\n\nNo ok row carries `machine_peak_gflops` (rows recorded before it was measured)."
    parts = [TITLE, EXPLAIN]
    nodes = sorted({key[0] for key in groups})
    for node in nodes:
        table = []
        for (group_node, threads, dtype, framework, blas), members in groups.items():
            if group_node != node:
                continue
            own, best = _median(members, "peak_gflops"), _median(members, "machine_peak_gflops")
            library = Counter(str(r.get("matmul_library")) for r in members).most_common(1)[0][0]
            best_library = Counter(str(r.get("machine_peak_library")) for r in members).most_common(1)[0][0]
            table.append(
                [
                    framework + (f" (blas={blas})" if blas not in ("None", "") else ""),
                    threads,
                    dtype,
                    f"{_gflops(own)} ({library})",
                    f"{_gflops(best)} ({best_library})",
                    _percent(own / best if own and best else None),
                    _gflops(_median(members, "theoretical_peak_gflops")),
                    _percent(_median(members, "mfu")),
                    _percent(_median(members, "efficiency_vs_machine_peak")),
                    _percent(_median(members, "efficiency_vs_theoretical_peak")),
                    len(members),
                ]
            )
        columns = [
            "framework",
            "threads",
            "dtype",
            "its matmul GFLOP/s (library)",
            "machine best GFLOP/s (library)",
            "of best",
            "theoretical GFLOP/s",
            "mfu",
            "vs machine",
            "vs theoretical",
            "rows",
        ]
        parts.append(f"### {node}\n\n" + md_table(columns, table))
    return "\n\n".join(parts)
