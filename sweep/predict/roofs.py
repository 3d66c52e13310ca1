"""A node's roofs: the matmul peak and the memory bandwidth at a dtype, thread count and ISA cap, read from the store's
rows of that node or from a fingerprint file (`bench.py hw --json` run on another host).

From rows (one node): the matmul roof is the median of `machine_peak_gflops` (the machine's best matmul at the
trial's threads, CPUs and dtype, the same for every framework) over the node's ok rows at that peak_dtype, threads and
ISA cap, or of `peak_gflops` where no row carries a machine peak (stores older than it). The median over rows, not the
row's own figure, so one peak measured during a noisy moment moves no row's roof, and a config that was never measured
gets the roof its node has at those settings. The memory roof is the median `roofline_bandwidth_gbs` (the triad at the
trial's threads) where rows at those threads carry it, else the node's all-core triad `hw_mem_bw_gbs`.

From a fingerprint file: its `peaks` list (one entry per thread count): `machine_fp32_gflops` (else `fp32_gflops`)
for fp32, `bf16_gflops` for bf16, `triad_gbs` for the bandwidth. A fingerprint measures no ISA-capped peak, so a
config with an `isa` cap is refused there.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sweep.predict.features import PredictError, Roofs
from sweep.results.rows import is_positive
from trainables.config import TrialConfig


def _median(values: list) -> float | None:
    values = [v for v in values if is_positive(v)]
    return statistics.median(values) if values else None


@dataclass
class NodeRoofs:
    """The roofs one node (or one fingerprinted host) was measured with."""

    node: str
    matmul: dict[tuple[str, int, str | None], tuple[float, str]] = field(default_factory=dict)  # -> (GFLOP/s, how)
    bandwidth: dict[int, tuple[float, str]] = field(default_factory=dict)  # threads -> (GB/s, how)
    all_core_bandwidth: float | None = None
    default_threads: int | None = None  # what threads=auto means on this node
    fingerprint: bool = False

    def threads_for(self, cfg: TrialConfig) -> int:
        threads = cfg.threads or cfg.cores or self.default_threads
        if threads is None:
            raise PredictError(f"threads=auto: node {self.node} says nothing of its cores; give threads=N")
        return int(threads)

    def roofs(self, dtype: str, threads: int, isa: str | None) -> Roofs:
        found = self.matmul.get((dtype, threads, isa))
        if found is None:
            measured = sorted({f"{d} threads={t}" + (f" isa={i}" if i else "") for d, t, i in self.matmul})
            where = "in its fingerprint file" if self.fingerprint else "in the store's rows"
            raise PredictError(
                f"threads={threads}, isa={isa or 'none'}, dtype {dtype}: node {self.node} has no matmul peak measured "
                f"there {where} (measured: {', '.join(measured) or 'none'})"
            )
        bandwidth = self.bandwidth.get(threads)
        if bandwidth is None and self.all_core_bandwidth:
            bandwidth = (self.all_core_bandwidth, f"hw_mem_bw_gbs {self.all_core_bandwidth:.1f} GB/s (all cores)")
        if bandwidth is None:
            raise PredictError(f"threads={threads}: node {self.node} has no memory bandwidth measured")
        return Roofs(found[0], bandwidth[0], f"{self.node}: {found[1]}, {bandwidth[1]}")


def node_roofs(node: str, rows: list[dict]) -> NodeRoofs:
    """The roofs of one node from its rows (only ok rows count)."""
    ok = [r for r in rows if r.get("status") == "ok"]
    roofs = NodeRoofs(node)
    keys = {(str(r.get("peak_dtype") or "fp32"), int(r["threads"]), r.get("isa")) for r in ok if r.get("threads")}
    for dtype, threads, isa in keys:
        at = [
            r
            for r in ok
            if (str(r.get("peak_dtype") or "fp32"), r.get("threads"), r.get("isa")) == (dtype, threads, isa)
        ]
        for column in ("machine_peak_gflops", "peak_gflops"):
            value = _median([r.get(column) for r in at])
            if value is not None:
                roofs.matmul[dtype, threads, isa] = (
                    value,
                    f"{column} {value:.1f} GFLOP/s ({dtype}, {threads} threads)",
                )
                break
    for threads in {t for _, t, _ in keys}:
        value = _median([r.get("roofline_bandwidth_gbs") for r in ok if r.get("threads") == threads])
        if value is not None:
            roofs.bandwidth[threads] = (value, f"roofline_bandwidth_gbs {value:.1f} GB/s ({threads} threads)")
    roofs.all_core_bandwidth = _median([r.get("hw_mem_bw_gbs") for r in ok])
    counts = Counter(int(r["threads"]) for r in ok if r.get("threads"))
    roofs.default_threads = max(counts, key=lambda t: (counts[t], t)) if counts else None
    return roofs


def read_fingerprint(path: Path) -> dict:
    try:
        document = json.loads(Path(path).read_text())
    except OSError as exc:
        raise PredictError(f"--fingerprint {path}: cannot read it ({exc.strerror})") from None
    except ValueError as exc:
        raise PredictError(f"--fingerprint {path}: not JSON ({exc}); give what `bench.py hw --json` prints") from None
    if not isinstance(document, dict):
        raise PredictError(f"--fingerprint {path}: a JSON object is expected, as `bench.py hw --json` prints")
    return document


def fingerprint_roofs(document: dict, path: Path | str = "the fingerprint") -> NodeRoofs:
    """The roofs of a host known by its fingerprint (`bench.py hw --json`): its measured peaks per thread count."""
    peaks = (document.get("peaks") or {}).get("peaks") if isinstance(document.get("peaks"), dict) else None
    if not peaks:
        raise PredictError(
            f"--fingerprint {path}: it holds no measured peaks (key 'peaks'); run `bench.py hw --json` on that host "
            "without --no-peaks"
        )
    name = f"{document.get('host') or 'host'} (fingerprint {document.get('fingerprint_id') or path})"
    roofs = NodeRoofs(name, fingerprint=True)
    for entry in peaks:
        threads = entry.get("threads")
        if not isinstance(threads, int):
            continue
        fp32 = next((c for c in ("machine_fp32_gflops", "fp32_gflops") if is_positive(entry.get(c))), None)
        if fp32:
            roofs.matmul["fp32", threads, None] = (entry[fp32], f"{fp32} {entry[fp32]:.1f} GFLOP/s ({threads} threads)")
        if is_positive(entry.get("bf16_gflops")):
            value = entry["bf16_gflops"]
            roofs.matmul["bf16", threads, None] = (value, f"bf16_gflops {value:.1f} GFLOP/s ({threads} threads)")
        if is_positive(entry.get("triad_gbs")):
            roofs.bandwidth[threads] = (
                entry["triad_gbs"],
                f"triad_gbs {entry['triad_gbs']:.1f} GB/s ({threads} threads)",
            )
    threads = [t for _, t, _ in roofs.matmul]
    if not threads:
        raise PredictError(f"--fingerprint {path}: its peaks hold no positive matmul GFLOP/s")
    roofs.default_threads = max(threads)
    return roofs
