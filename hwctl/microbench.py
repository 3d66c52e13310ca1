"""Measured peaks that efficiency figures divide by, as callers ask for them: matmul GFLOP/s (fp32, bf16) and
triad memory bandwidth per thread count, and which library runs a matmul, each cached (peak_cache.py) and measured
on a miss in the calling process (kernels.py, library_probe.py).

Everything is measured in the calling process, so with its threads, affinity and allocator: a trial's worker
measures under the trial's own conditions. A matmul peak measured while other processes used its CPUs is measured
again, and not cached if disturbed every time (measure_undisturbed): a low peak would inflate the MFU of every later
trial. The names callers import (trainables/, sweep/nodes.py, bench.py) are all importable from here (`__all__`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path

from hwctl.cores import format_cpu_list
from hwctl.fingerprint import host_fingerprint
from hwctl.kernels import (
    DTYPE_LABELS,
    MATMUL_REPEATS,
    MATMUL_SECONDS_PER_SIZE,
    MATMUL_SIZES,
    bf16_unsupported_reason,
    matmul_method,
    matmul_unsupported_reason,
    measure_matmul_peak_gflops,
    measure_memory_bandwidth_gbs,
    triad_array_bytes,
    triad_method,
)
from hwctl.library_probe import libraries_in, probe_matmul_library, verbose_lines
from hwctl.machine_efficiency import read_machine_peak
from hwctl.peak_cache import (
    CACHE_FILE,
    ISA_CAP_VARIABLES,
    cached_or_measured,
    entry_key,
    fresh_entry,
    measuring_conditions,
    refresh_peaks,
    store_entry,
    timestamp,
)
from hwctl.proc_sysfs import PROC_ROOT
from hwctl.telemetry import USER_HZ, CpuContention

__all__ = [
    "CACHE_FILE",
    "ISA_CAP_VARIABLES",
    "MATMUL_REPEATS",
    "MATMUL_SECONDS_PER_SIZE",
    "MATMUL_SIZES",
    "bf16_unsupported_reason",
    "cached_peak",
    "libraries_in",
    "matmul_library",
    "matmul_method",
    "matmul_peak_gflops",
    "measure_host_peaks",
    "measure_matmul_peak_gflops",
    "measure_memory_bandwidth_gbs",
    "measure_undisturbed",
    "measuring_conditions",
    "memory_bandwidth_gbs",
    "probe_matmul_library",
    "process_cpus",
    "refresh_peaks",
    "triad_array_bytes",
    "verbose_lines",
]

# a matmul peak is measured again where others took more than this share of the CPU time its threads needed, beyond
# what its spare CPUs (those of its mask it has no thread for) absorb. Measured on the 2-core development VM: quiet
# peaks saw 0-2.4% foreign CPU (kernel threads, tick resolution); beside another session's work, 2-thread peaks saw
# 36-50% and 15-30% fewer GFLOP/s, while 1-thread peaks beside a neighbour on the other CPU lost nothing measurable
PEAK_FOREIGN_SHARE_LIMIT = 0.05
PEAK_TRIES = 3
# the CPUs' ticks and the process's own time disagree by a tick or so (telemetry.py): resolution, not a neighbour
PEAK_FOREIGN_SLACK_S = 2 / USER_HZ


def process_cpus(proc_root: Path = PROC_ROOT) -> list[int]:
    """The CPUs any thread of this process may run on: once OpenMP binds its threads (OMP_PLACES), the main thread's
    own mask, os.sched_getaffinity(0), is only the first place."""
    cpus = set(os.sched_getaffinity(0))
    with contextlib.suppress(OSError):
        for tid in os.listdir(proc_root / "self/task"):
            with contextlib.suppress(OSError):  # the thread ended meanwhile
                cpus |= os.sched_getaffinity(int(tid))
    return sorted(cpus)


def measure_undisturbed(measure, cpus: list[int], threads: int, proc_root: Path = PROC_ROOT) -> tuple[float, str, bool]:
    """(figure, what its tries were for the method, whether to cache it): measure() on `threads` of `cpus`, again
    while disturbed (PEAK_FOREIGN_SHARE_LIMIT), up to PEAK_TRIES times. The highest figure is kept: a neighbour
    can only slow a matmul down. Where /proc cannot be read, one try, cached, as before contention was watched."""
    tries = []  # (figure, foreign share of the CPUs' time, disturbed)
    for _ in range(PEAK_TRIES):
        contention = CpuContention(cpus, proc_root)
        contention.start()
        started = time.perf_counter()
        value = measure()
        wall_s = time.perf_counter() - started
        foreign_s = contention.stop()["foreign_cpu_s"]
        if foreign_s is None:
            return value, "", True
        spare_s = max(len(cpus) - threads, 0) * wall_s
        disturbed = foreign_s - spare_s > PEAK_FOREIGN_SHARE_LIMIT * wall_s * threads + PEAK_FOREIGN_SLACK_S
        tries.append((value, foreign_s / (wall_s * len(cpus)) if wall_s > 0 else 0.0, disturbed))
        if not disturbed:
            break
    value, share, _ = max(tries, key=lambda t: t[0])
    note = (
        f"; {len(tries)} {'try' if len(tries) == 1 else 'tries'} (again, up to {PEAK_TRIES}, while other processes "
        f"took over {PEAK_FOREIGN_SHARE_LIMIT:.0%} of its threads' CPU time beyond its spare CPUs); kept one with "
        f"foreign CPU {share:.1%} (of the time of cpus {format_cpu_list(cpus)})"
    )
    undisturbed = not all(t[2] for t in tries)
    return value, note + ("" if undisturbed else "; disturbed on every try: not cached"), undisturbed


def matmul_peak_gflops(
    threads: int,
    cache_dir: Path,
    dtype_name: str = "float32",
    fingerprint_id: str | None = None,
    proc_root: Path = PROC_ROOT,
) -> dict:
    """torch.mm's cached matmul peak for this host, fingerprint and thread count, measuring it on a miss: cached_peak.

    fingerprint_id=None: this host's (host_fingerprint()["hw_fingerprint_id"]).
    """
    reason = matmul_unsupported_reason(dtype_name)
    if reason:
        return {"peak_gflops": None, "peak_cached": False, "peak_method": reason}
    return cached_peak(
        "matmul",
        dtype_name,
        threads,
        cache_dir,
        lambda: measure_matmul_peak_gflops(dtype_name, threads),
        matmul_method(dtype_name),
        fingerprint_id,
        proc_root,
    )


def torch_conditions() -> str:
    """What a torch kernel's cache key adds (peak_cache.measuring_conditions): torch's CPU capability, and where fp32
    matmuls are routed to oneDNN with reduced-precision math (blas=onednn-bf16math), that routing."""
    import torch

    key = f"|capability={torch.backends.cpu.get_cpu_capability()}"
    routing = torch.backends.mkldnn.matmul.fp32_precision  # "bf16" sends fp32 matmuls to oneDNN (blas=onednn-bf16math)
    if routing not in ("none", "ieee"):
        key += f"|mkldnn_fp32_precision={routing}"
    return key


def cached_peak(
    figure: str,
    dtype_name: str,
    threads: int,
    cache_dir: Path,
    measure,
    method: str,
    fingerprint_id: str | None = None,
    proc_root: Path = PROC_ROOT,
    torch_kernel: bool = True,
) -> dict:
    """measure()'s figure (GFLOP/s) cached per host fingerprint, `figure` (one per kernel: "matmul" is torch.mm's,
    another framework names its own), dtype and thread count. On a miss it is measured now, again while other
    processes disturb it (measure_undisturbed); a figure disturbed on every try is not cached, so a later trial
    measures again. torch_kernel=False: measure() runs another framework's kernel (no torch import for the key).
    Returns peak_gflops, peak_cached and peak_method (`method` plus the tries)."""
    fingerprint_id = fingerprint_id or host_fingerprint()["hw_fingerprint_id"]
    key = entry_key(figure, dtype_name, threads, torch_conditions() if torch_kernel else "")
    entry = fresh_entry(cache_dir, fingerprint_id, key)
    if entry is not None:  # its own method: the tries are those of the trial that measured it
        return {"peak_gflops": entry["value"], "peak_cached": True, "peak_method": entry["method"]}
    started = timestamp()  # the start: a refresh during the measurement makes it stale
    peak, tries, undisturbed = measure_undisturbed(measure, process_cpus(proc_root), threads, proc_root)
    method += tries
    if undisturbed:
        store_entry(cache_dir, fingerprint_id, key, peak, method, started)
    return {"peak_gflops": peak, "peak_cached": False, "peak_method": method}


def matmul_library(
    dtype_name: str, shape: tuple[int, int, int], threads: int, cache_dir: Path, fingerprint_id: str | None = None
) -> str:
    """probe_matmul_library's answer for shape (m, k, n), cached like the peaks: MKL's first verbose call costs
    0.2-0.7 s here (it times the CPU clock for its banner), more than a trial should pay every time."""
    fingerprint_id = fingerprint_id or host_fingerprint()["hw_fingerprint_id"]
    m, k, n = shape
    library, _ = cached_or_measured(
        cache_dir,
        fingerprint_id,
        entry_key(f"library {m}x{k}x{n}", dtype_name, threads, torch_conditions()),
        lambda: probe_matmul_library(dtype_name, m, k, n),
        "one torch.nn.functional.linear watched through MKL and oneDNN verbose output",
    )
    return library


def memory_bandwidth_gbs(threads: int, cache_dir: Path, fingerprint_id: str | None = None) -> dict:
    """The cached triad bandwidth for this host, fingerprint and thread count, measuring it on a miss."""
    fingerprint_id = fingerprint_id or host_fingerprint()["hw_fingerprint_id"]
    array_bytes = triad_array_bytes()
    method = triad_method(array_bytes)
    gbs, cached = cached_or_measured(
        cache_dir,
        fingerprint_id,
        entry_key("triad", "float32", threads, torch_conditions()),
        lambda: measure_memory_bandwidth_gbs(threads, array_bytes),
        method,
    )
    return {"bandwidth_gbs": gbs, "bandwidth_cached": cached, "bandwidth_method": method}


def measure_host_peaks(thread_counts, cache_dir: Path, fingerprint_id: str | None = None) -> dict:
    """fp32 and bf16 matmul peaks and triad bandwidth for each thread count, in this process, cached."""
    import torch

    allowed = len(os.sched_getaffinity(0))
    too_many = [t for t in thread_counts if not 1 <= t <= allowed]
    if too_many:
        raise ValueError(f"thread_counts={too_many}: this process may use 1..{allowed} CPUs")
    fingerprint_id = fingerprint_id or host_fingerprint()["hw_fingerprint_id"]
    rows = []
    for threads in thread_counts:
        row: dict = {"threads": threads}
        for dtype_name, label in DTYPE_LABELS.items():
            peak = matmul_peak_gflops(threads, cache_dir, dtype_name, fingerprint_id)
            row |= {f"{label}_gflops": peak["peak_gflops"], f"{label}_cached": peak["peak_cached"]}
            row[f"{label}_method"] = peak["peak_method"]
        # the fastest library (torch.mm, oneDNN fp32, NumPy, XLA), each in a process of its own on this one's CPUs
        machine = read_machine_peak("fp32", threads, sorted(os.sched_getaffinity(0)), cache_dir, fingerprint_id)
        row |= {
            "machine_fp32_gflops": machine["machine_peak_gflops"],
            "machine_fp32_cached": machine["machine_peak_cached"],
        }
        row["machine_fp32_library"] = machine["machine_peak_library"]
        bandwidth = memory_bandwidth_gbs(threads, cache_dir, fingerprint_id)
        row |= {"triad_gbs": bandwidth["bandwidth_gbs"], "triad_cached": bandwidth["bandwidth_cached"]}
        row["triad_method"] = bandwidth["bandwidth_method"]
        rows.append(row)
    return {
        "host": socket.gethostname(),
        "fingerprint_id": fingerprint_id,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "allowed_cpus": allowed,
        "cache_path": str(Path(cache_dir) / CACHE_FILE),
        "peaks": rows,
    }
