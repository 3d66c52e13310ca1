"""The machine's best measured matmul peak: the fastest of every installed library (matmul_libraries.py: torch.mm,
oneDNN fp32 IEEE, NumPy's BLAS, XLA) at a trial's threads, CPUs and dtype, cached like the other peaks
(peak_cache.py) so a sweep pays it once per node and set of conditions.

    python -m hwctl.machine_peak DTYPE THREADS CPUS CACHE_DIR [FINGERPRINT_ID]   # one JSON object on stdout

A process of its own, started by the worker after the timed region (machine_efficiency.py): the cache key and the
library children need no framework in the worker. Each package runs in a child process of its own, on the trial's
CPUs and environment (OMP_*, allocator, ISA caps; XLA_FLAGS, a jax trial's backend choice, left out). The entry is
keyed without torch's CPU capability (no kernel conditions): the ISA caps that change it are environment variables the
key names. A figure disturbed on every try (microbench.measure_undisturbed) keeps the whole entry out of the cache,
so a later trial measures again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hwctl.fingerprint import host_fingerprint
from hwctl.machine_efficiency import FIGURE
from hwctl.matmul_libraries import LIBRARIES
from hwctl.peak_cache import entry_key, fresh_entry, store_entry, timestamp

LIBRARY_TIMEOUT_S = 300


def measure_libraries(dtype_name: str, threads: int, cpus: list[int]) -> list[dict]:
    """measure_library(...) of each library, in a fresh process per package on `cpus`, in LIBRARIES' order."""
    by_package: dict[str, list[str]] = {}
    for library, (package, _) in LIBRARIES.items():
        by_package.setdefault(package, []).append(library)
    found = {}
    for libraries in by_package.values():
        command = [sys.executable, "-m", "hwctl.matmul_libraries", ",".join(libraries), dtype_name, str(threads)]
        command.append(",".join(map(str, cpus)))
        done = subprocess.run(command, capture_output=True, text=True, timeout=LIBRARY_TIMEOUT_S)
        for line in done.stdout.strip().splitlines():
            result = json.loads(line)
            found[result["library"]] = result
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
        for library in libraries:  # a process that died took its remaining libraries with it
            found.setdefault(
                library, {"library": library, "gflops": None, "skipped": f"failed (exit {done.returncode}): {tail}"}
            )
    return [found[library] for library in LIBRARIES]


def best_of(results: list[dict]) -> dict:
    """machine_peak_gflops, machine_peak_library and machine_peak_method (every library's figure or why it was
    skipped) from measure_libraries(...)."""
    measured = [r for r in results if r["gflops"] is not None]
    best = max(measured, key=lambda r: r["gflops"], default=None)
    parts = [
        f"{r['library']} {r['gflops']:.1f}" if r["gflops"] is not None else f"{r['library']} skipped: {r['skipped']}"
        for r in results
    ]
    return {
        "machine_peak_gflops": best["gflops"] if best else None,
        "machine_peak_library": best["library"] if best else None,
        "machine_peak_method": "best GFLOP/s of " + "; ".join(parts) + (f" (best: {best['method']})" if best else ""),
    }


def machine_matmul_peak(
    dtype_name: str, threads: int, cpus: list[int], cache_dir: Path, fingerprint_id: str | None = None
) -> dict:
    """best_of(...) for this host, fingerprint, dtype, threads and conditions, cached; machine_peak_cached says
    whether it came from the cache."""
    fingerprint_id = fingerprint_id or host_fingerprint()["hw_fingerprint_id"]
    key = entry_key(FIGURE, dtype_name, threads)
    entry = fresh_entry(cache_dir, fingerprint_id, key)
    if entry is not None:
        return entry["value"] | {"machine_peak_cached": True}
    started = timestamp()
    results = measure_libraries(dtype_name, threads, cpus)
    value = best_of(results)
    if all(r.get("undisturbed", True) for r in results):
        store_entry(cache_dir, fingerprint_id, key, value, value["machine_peak_method"], started)
    return value | {"machine_peak_cached": False}


if __name__ == "__main__":
    dtype_arg, threads_arg, cpus_arg, cache_arg = sys.argv[1:5]
    cpu_list = [int(c) for c in cpus_arg.split(",")]
    # the caller's main thread may be bound to one OpenMP place; the cache key reads this process's CPUs
    os.sched_setaffinity(0, cpu_list)
    # XLA's backend flags are a jax trial's choice, as torch's blas setting (in its own process) is a torch trial's:
    # every library runs as it comes, so trials of every framework on the node divide by the same figure
    os.environ.pop("XLA_FLAGS", None)
    fingerprint_arg = sys.argv[5] if len(sys.argv) > 5 else None
    print(json.dumps(machine_matmul_peak(dtype_arg, int(threads_arg), cpu_list, Path(cache_arg), fingerprint_arg)))
