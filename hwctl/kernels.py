"""The kernels whose best speed is a peak, timed in the calling process (so with its threads, affinity and
allocator): square torch.mm for GFLOP/s (fp32, bf16) and a STREAM-like triad for memory bandwidth; the text that
says how each was measured; and whether bf16 can be measured on this CPU at all. Nothing here caches (peak_cache.py)
or watches for neighbours (microbench.py)."""

from __future__ import annotations

import contextlib
import time
import timeit
from pathlib import Path

from hwctl.cores import SYSFS_ROOT
from hwctl.isa import bf16_native_reason, cpu_flags
from hwctl.proc_sysfs import PROC_ROOT, meminfo_kb, read_caches

MATMUL_SIZES = (512, 1024, 2048)
MATMUL_REPEATS = 5
# one 2048^3 fp32 call takes ~0.16 s on one thread here: a budget per size keeps a thread count well
# under 2 s; the best call, not the mean, is the peak, so fewer calls on the big size cost little
MATMUL_SECONDS_PER_SIZE = 0.15
DTYPE_LABELS = {"float32": "fp32", "bfloat16": "bf16"}
TRIAD_MIN_ARRAY_BYTES = 64 * 2**20
TRIAD_REPEATS = 10


def matmul_method(dtype_name: str) -> str:
    return (
        f"best GFLOP/s of torch.mm {dtype_name} square n in {MATMUL_SIZES} (2n^3 FLOPs), after one warm-up call, "
        f"up to {MATMUL_REPEATS} calls or {MATMUL_SECONDS_PER_SIZE} s per n, in the measuring process"
    )


def triad_method(array_bytes: int) -> str:
    return (
        f"best of {TRIAD_REPEATS} torch.add(b, c, alpha=s, out=a) float32, 3 arrays x {array_bytes // 2**20} MiB "
        "(4x all last-level cache, 64 MiB at least, RAM/16 at most), counted as 3 x 4 B per element (STREAM triad: write-allocate not counted)"
    )


# ---- what is and is not measurable --------------------------------------------------------------
def bf16_unsupported_reason(isa: str) -> str | None:
    """Without native bf16 the CPU converts and runs fp32 kernels: a "bf16 peak" would be meaningless.
    isa: CPU flags, comma-separated."""
    reason = bf16_native_reason(flags=set(isa.split(",")))
    return f"unsupported: {reason}" if reason else None


def matmul_unsupported_reason(dtype_name: str) -> str | None:
    """Why torch.mm's peak in dtype_name cannot be measured on this CPU, or None; ValueError for an unknown dtype."""
    if dtype_name not in DTYPE_LABELS:
        raise ValueError(f"dtype_name={dtype_name!r}: allowed are {', '.join(DTYPE_LABELS)}")
    # cpuinfo's flags, not the fingerprint's hw_isa: that lists a selection, without avx_ne_convert
    return bf16_unsupported_reason(",".join(sorted(cpu_flags()))) if dtype_name == "bfloat16" else None


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """torch, with its intra-op threads set to `threads` (None: left as they are) until the block ends."""
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch
    finally:
        torch.set_num_threads(before)


# ---- the kernels --------------------------------------------------------------------------------
def best_matmul_gflops(call_of, check=None) -> float:
    """Best GFLOP/s over MATMUL_SIZES: call_of(n) -> call() running one n x n x n matmul and returning its product;
    the first call of each n is not timed (allocations, kernel selection, compilation); check(n, product), where
    given, judges the smallest n's first product and raises where it is wrong. Every peak of the project (torch.mm's,
    each library's in matmul_libraries.py, blas=onednn-fp32's) is timed by this one loop."""
    best = 0.0
    for n in MATMUL_SIZES:
        call = call_of(n)
        product = call()
        if check is not None and n == MATMUL_SIZES[0]:
            check(n, product)
        # a loop, not timeit.repeat: the budget below stops it early on the big sizes
        spent = 0.0
        for _ in range(MATMUL_REPEATS):
            start = time.perf_counter()
            call()
            elapsed = time.perf_counter() - start
            best, spent = max(best, 2 * n**3 / elapsed / 1e9), spent + elapsed
            if spent > MATMUL_SECONDS_PER_SIZE:
                break
    return best


def measure_matmul_peak_gflops(dtype_name: str = "float32", threads: int | None = None) -> float:
    """Best GFLOP/s of square torch.mm (threads=None: the process's current torch threads)."""
    with torch_threads(threads) as torch:
        dtype = getattr(torch, dtype_name)
        operands = {}

        def call_of(n):
            operands[n] = a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
            return lambda: torch.mm(a, b)

        def check(n, product):
            _check_against_fp32(torch, *operands[n], product)

        return best_matmul_gflops(call_of, None if dtype == torch.float32 else check)


def _check_against_fp32(torch, a, b, product) -> None:
    # a fast kernel that computes the wrong thing is not a peak: bf16 output rounding is ~0.4%
    reference = torch.mm(a.float(), b.float())
    error = float((product.float() - reference).norm() / reference.norm())
    if error > 0.02:
        raise RuntimeError(f"torch.mm {a.dtype} differs from fp32 by {error:.3f} (relative): not measuring it")


def triad_array_bytes(sysfs_root: Path = SYSFS_ROOT, proc_root: Path = PROC_ROOT) -> int:
    """Bytes per array: at least 4x all last-level cache (so no array fits), at most 1/16 of RAM."""
    caches = read_caches(sysfs_root)
    last_level = max(caches.values(), key=lambda c: c["level"], default={})
    wanted = max(TRIAD_MIN_ARRAY_BYTES, 4 * 1024 * (last_level.get("total_kb") or 0))
    memory_kb = meminfo_kb((proc_root / "meminfo").read_text()).get("MemTotal")
    if memory_kb:
        wanted = min(wanted, memory_kb * 1024 // 16)
    return wanted // 2**20 * 2**20


def measure_memory_bandwidth_gbs(threads: int, array_bytes: int | None = None) -> float:
    """STREAM-triad-like a = b + s*c over float32 arrays far larger than the caches: best GB/s."""
    array_bytes = array_bytes or triad_array_bytes()
    with torch_threads(threads) as torch:
        n = array_bytes // 4
        # fill_ runs on the measuring threads: first touch places the pages near them (NUMA)
        a, b, c = (torch.empty(n, dtype=torch.float32).fill_(v) for v in (0.0, 1.0, 2.0))
        torch.add(b, c, alpha=3.0, out=a)  # warm-up
        # one call per timing (timeit's clock is time.perf_counter): the best call, as STREAM's "Best Rate"
        # (https://www.cs.virginia.edu/stream/ref.html)
        best = min(timeit.repeat(lambda: torch.add(b, c, alpha=3.0, out=a), repeat=TRIAD_REPEATS, number=1))
        if float(a[n // 2]) != 7.0:  # 1 + 3 * 2: the kernel really ran
            raise RuntimeError(f"triad gave {float(a[n // 2])}, expected 7.0")
    return 3 * 4 * n / best / 1e9
