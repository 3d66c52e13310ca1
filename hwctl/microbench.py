"""Measured peaks that efficiency figures divide by: the fp32 matmul peak per thread count.

The peak is the best GFLOP/s of square torch.mm calls over a few sizes, in the calling process
(so with its threads, affinity and allocator). It is cached per host, CPU, torch build and
thread count in a small JSON file, so only the first trial of a kind pays for it.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import time
from pathlib import Path

PEAK_METHOD = "best of 5 x torch.mm fp32 square n in (512, 1024, 2048), 2n^3 FLOPs each, in the trial's process"
SIZES = (512, 1024, 2048)
REPEATS = 5


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def measure_matmul_peak_gflops(dtype_name: str = "float32") -> float:
    import torch

    dtype = getattr(torch, dtype_name)
    best = 0.0
    for n in SIZES:
        a = torch.randn(n, n).to(dtype)
        b = torch.randn(n, n).to(dtype)
        torch.mm(a, b)  # first call: allocations and kernel selection
        for _ in range(REPEATS):
            start = time.perf_counter()
            torch.mm(a, b)
            elapsed = time.perf_counter() - start
            best = max(best, 2 * n**3 / elapsed / 1e9)
    return best


def matmul_peak_gflops(threads: int, cache_dir: Path, dtype_name: str = "float32") -> dict:
    """The cached peak for this host and thread count, measuring it on a miss."""
    import torch

    ident = {
        "host": socket.gethostname(),
        "cpu_model": _cpu_model(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": threads,
        "dtype": dtype_name,
        "allowed_cpus": len(os.sched_getaffinity(0)),
    }
    key = "|".join(str(ident[k]) for k in sorted(ident))
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / "matmul_peak.json"
    cache = json.loads(path.read_text()) if path.exists() else {}
    if key in cache:
        return {"peak_gflops": cache[key], "peak_cached": True, "peak_method": PEAK_METHOD}
    peak = measure_matmul_peak_gflops(dtype_name)
    cache = json.loads(path.read_text()) if path.exists() else {}  # another worker may have written meanwhile
    cache[key] = peak
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cache, indent=1))
    os.replace(tmp, path)
    return {"peak_gflops": peak, "peak_cached": False, "peak_method": PEAK_METHOD}
