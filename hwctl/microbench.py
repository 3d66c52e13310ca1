"""Measured peaks that efficiency figures divide by: matmul GFLOP/s (fp32, bf16) and triad memory
bandwidth, per thread count; and which library runs a matmul.

Everything is measured in the calling process, so with its threads, affinity and allocator: a trial's
worker measures under the trial's own conditions. Figures are cached in `cache_dir/host_peaks.json`,
one section per host + fingerprint id (fingerprint.py: CPU, cores, ISA, kernel, torch, memory, cpufreq
limits, governor, turbo), so a changed machine or setting measures again while the old figures stay for
the old fingerprint. Within a section an entry is keyed by figure, dtype, threads and what the
measuring process runs under (`measuring_conditions`): its CPUs in OpenMP place order, the OpenMP
binding, the preloaded allocator, torch's CPU capability and the oneDNN/MKL ISA caps. A sweep calls
`refresh_peaks` on each node before its first trial: entries measured before that are stale, so each
set of conditions is measured once per sweep, by its first trial, and reused by the rest. A matmul peak measured
while other processes used its CPUs is measured again, and not cached if disturbed every time (measure_undisturbed):
a low peak would inflate the MFU of every later trial.

Why a cache and not a measurement in every worker (measured on the 2-core development VM, idle): a
peak costs 0.6 s of worker time on 2 threads, 1.05 s on 1 (fp32), 0.4-0.5 s more for bf16, and the
library probe 0.2-0.7 s (MKL's first verbose call times the CPU clock): 10-20% of a quick-plan trial
(~8 s). The quick plan's 67 trials here run under 9 sets of conditions (18 with the Linear shapes the
library probe keys on): about 10 s per sweep instead of 55-90 s. A hit costs under 1 ms.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import socket
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from hwctl.cores import SYSFS_ROOT, format_cpu_list
from hwctl.files import atomic_write_text
from hwctl.fingerprint import PROC_ROOT, host_fingerprint, meminfo_kb, read_caches
from hwctl.isa import bf16_native_reason, cpu_flags
from hwctl.telemetry import USER_HZ, CpuContention

CACHE_FILE = "host_peaks.json"
MATMUL_SIZES = (512, 1024, 2048)
MATMUL_REPEATS = 5
# one 2048^3 fp32 call takes ~0.16 s on one thread here: a budget per size keeps a thread count well
# under 2 s; the best call, not the mean, is the peak, so fewer calls on the big size cost little
MATMUL_SECONDS_PER_SIZE = 0.15
DTYPE_LABELS = {"float32": "fp32", "bfloat16": "bf16"}
TRIAD_MIN_ARRAY_BYTES = 64 * 2**20
TRIAD_REPEATS = 10
# ISA caps a trial may set besides ATEN_CPU_CAPABILITY (which the capability in the key reflects):
# oneDNN runs the bf16 matmuls, MKL the fp32 ones
ISA_CAP_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
# a matmul peak is measured again where others took more than this share of the CPU time its threads needed, beyond
# what its spare CPUs (those of its mask it has no thread for) absorb. Measured on the 2-core development VM: quiet
# peaks saw 0-2.4% foreign CPU (kernel threads, tick resolution); beside another session's work, 2-thread peaks saw
# 36-50% and 15-30% fewer GFLOP/s, while 1-thread peaks beside a neighbour on the other CPU lost nothing measurable
PEAK_FOREIGN_SHARE_LIMIT = 0.05
PEAK_TRIES = 3
# the CPUs' ticks and the process's own time disagree by a tick or so (telemetry.py): resolution, not a neighbour
PEAK_FOREIGN_SLACK_S = 2 / USER_HZ


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


def _unsupported(dtype_name: str) -> str | None:
    if dtype_name not in DTYPE_LABELS:
        raise ValueError(f"dtype_name={dtype_name!r}: allowed are {', '.join(DTYPE_LABELS)}")
    # cpuinfo's flags, not the fingerprint's hw_isa: that lists a selection, without avx_ne_convert
    return bf16_unsupported_reason(",".join(sorted(cpu_flags()))) if dtype_name == "bfloat16" else None


@contextlib.contextmanager
def _torch_threads(threads: int | None):
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch
    finally:
        torch.set_num_threads(before)


# ---- the kernels --------------------------------------------------------------------------------
def measure_matmul_peak_gflops(dtype_name: str = "float32", threads: int | None = None) -> float:
    """Best GFLOP/s of square torch.mm (threads=None: the process's current torch threads)."""
    with _torch_threads(threads) as torch:
        dtype = getattr(torch, dtype_name)
        best = 0.0
        for n in MATMUL_SIZES:
            a = torch.randn(n, n).to(dtype)
            b = torch.randn(n, n).to(dtype)
            product = torch.mm(a, b)  # first call: allocations and kernel selection
            if dtype != torch.float32 and n == MATMUL_SIZES[0]:
                _check_against_fp32(torch, a, b, product)
            spent = 0.0
            for _ in range(MATMUL_REPEATS):
                start = time.perf_counter()
                torch.mm(a, b)
                elapsed = time.perf_counter() - start
                best, spent = max(best, 2 * n**3 / elapsed / 1e9), spent + elapsed
                if spent > MATMUL_SECONDS_PER_SIZE:
                    break
    return best


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
    with _torch_threads(threads) as torch:
        n = array_bytes // 4
        # fill_ runs on the measuring threads: first touch places the pages near them (NUMA)
        a, b, c = (torch.empty(n, dtype=torch.float32).fill_(v) for v in (0.0, 1.0, 2.0))
        torch.add(b, c, alpha=3.0, out=a)  # warm-up
        best = float("inf")
        for _ in range(TRIAD_REPEATS):
            start = time.perf_counter()
            torch.add(b, c, alpha=3.0, out=a)
            best = min(best, time.perf_counter() - start)
        if float(a[n // 2]) != 7.0:  # 1 + 3 * 2: the kernel really ran
            raise RuntimeError(f"triad gave {float(a[n // 2])}, expected 7.0")
    return 3 * 4 * n / best / 1e9


# ---- which library runs a matmul ----------------------------------------------------------------
def verbose_lines(run) -> tuple[list[str], bool]:
    """(what MKL and oneDNN print while run() executes, their verbose mode switched on in this process; whether both
    could be switched on).

    Both print to the C stdout (file descriptor 1), which is borrowed meanwhile; the caller's output is flushed
    first and lands where it did before.
    """
    import torch

    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    libc.fflush(None)
    saved = os.dup(1)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 1)
        # the _C setters, not torch.backends.*.verbose: those assert where a library cannot be made verbose
        mkl = torch.backends.mkl.is_available() and torch._C._verbose.mkl_set_verbose(1)
        onednn = torch.backends.mkldnn.is_available() and torch._C._verbose.mkldnn_set_verbose(1)
        try:
            run()
        finally:
            if mkl:
                torch._C._verbose.mkl_set_verbose(0)
            if onednn:
                torch._C._verbose.mkldnn_set_verbose(0)
            libc.fflush(None)
            os.dup2(saved, 1)
            os.close(saved)
        capture.seek(0)
        return capture.read().decode(errors="replace").splitlines(), bool(mkl and onednn)


def libraries_in(lines: list[str]) -> list[str]:
    """'mkl (SGEMM)', 'onednn (brg_matmul:avx512_core_bf16)': the GEMM calls of MKL_VERBOSE / ONEDNN_VERBOSE lines."""
    found = []
    for line in lines:
        if line.startswith("MKL_VERBOSE ") and "GEMM" in line.split("(")[0]:
            found.append(f"mkl ({line.split()[1].split('(')[0]})")
        parts = line.split(",")
        if parts[0] == "onednn_verbose" and "exec" in parts:  # ...,exec,cpu,matmul,brg_matmul:avx512_core_bf16,...
            at = parts.index("exec")
            found.append(f"onednn ({parts[at + 3]})" if len(parts) > at + 3 else "onednn")
    return list(dict.fromkeys(found))


def probe_matmul_library(dtype_name: str, m: int, k: int, n: int) -> str:
    """The library that runs torch's Linear, (m x k) @ (k x n) in dtype_name, in this process: one call watched
    through MKL's and oneDNN's verbose output. Where both were watched and neither reported it, and torch's BLAS is
    MKL, it was ATen's own kernel ("aten"); "unknown" where that cannot be told."""
    import torch

    dtype = getattr(torch, dtype_name)
    inputs, weight = torch.randn(m, k).to(dtype), torch.randn(n, k).to(dtype)
    lines, watched = verbose_lines(lambda: torch.nn.functional.linear(inputs, weight))
    found = libraries_in(lines)
    if found:
        return " + ".join(found)
    # torch built with MKL uses it as its BLAS: silent both, the matmul ran in ATen's own kernel (measured here for
    # bf16 under isa=avx2); without MKL it may have been another BLAS, which says nothing
    return "aten" if watched else "unknown"


# ---- the cache ----------------------------------------------------------------------------------
def _section_key(fingerprint_id: str) -> str:
    return f"{socket.gethostname()}|{fingerprint_id}"


def _now() -> str:
    # microseconds: an entry is stale when measured before the section's refreshed_at, compared as text
    return datetime.now(UTC).isoformat(timespec="microseconds")


def measuring_conditions(torch_kernel: bool = True) -> str:
    """What the calling process measures under, besides the host's fingerprint and its thread count: for a torch
    kernel torch's CPU capability (a jax or numpy kernel does not import torch for it); XLA_FLAGS where set."""
    # OMP_PLACES: once OpenMP starts, the main thread's own mask is only the first place; an abstract one (cores,
    # threads) names no CPUs, so the worker's mask as it started (BENCH_TRIAL_CPUS, set by trainables/worker.py) too
    places = os.environ.get("OMP_PLACES")
    started_on = os.environ.get("BENCH_TRIAL_CPUS")
    cpus = f"places={places}" if places else f"cpus={format_cpu_list(sorted(os.sched_getaffinity(0)))}"
    if places and started_on and not places.startswith("{"):
        cpus += f"|cpus={started_on}"
    preload = os.environ.get("LD_PRELOAD", "")
    allocator = ",".join(Path(p).name for p in preload.replace(":", " ").split()) or "glibc"
    key = f"{cpus}|bind={os.environ.get('OMP_PROC_BIND', 'none')}|allocator={allocator}"
    if torch_kernel:
        import torch

        key += f"|capability={torch.backends.cpu.get_cpu_capability()}"
        routing = torch.backends.mkldnn.matmul.fp32_precision  # "bf16" sends fp32 matmuls to oneDNN (blas=onednn)
        if routing not in ("none", "ieee"):
            key += f"|mkldnn_fp32_precision={routing}"
    # set only where a trial asks for them, so the keys of every earlier figure hold
    variables = (*ISA_CAP_VARIABLES, "XLA_FLAGS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
    return key + "".join(f"|{name}={os.environ[name]}" for name in variables if os.environ.get(name))


def _entry_key(figure: str, dtype_name: str, threads: int, torch_kernel: bool = True) -> str:
    return f"{figure}|{dtype_name}|threads={threads}|{measuring_conditions(torch_kernel)}"


def _read_cache(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # absent, or unreadable: measuring again is the safe answer
        return {}


@contextlib.contextmanager
def _section_for_update(cache_dir: Path, fingerprint_id: str):
    """This host's section of the cache file, written back on exit, under a lock: another worker may write too."""
    path = Path(cache_dir) / CACHE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{CACHE_FILE}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cache = _read_cache(path)
        section = cache.setdefault(
            _section_key(fingerprint_id), {"host": socket.gethostname(), "fingerprint_id": fingerprint_id}
        )
        yield section
        atomic_write_text(path, json.dumps(cache, indent=1, sort_keys=True))


def _fresh_entry(cache_dir: Path, fingerprint_id: str, entry_key: str) -> dict | None:
    """The cached entry ({"value", "method", "measured_at"}), or None where absent or measured before the last
    refresh."""
    section = _read_cache(Path(cache_dir) / CACHE_FILE).get(_section_key(fingerprint_id), {})
    entry = section.get("peaks", {}).get(entry_key)
    if entry is not None and entry.get("measured_at", "") >= section.get("refreshed_at", ""):
        return entry
    return None


def _store(cache_dir: Path, fingerprint_id: str, entry_key: str, value, method: str, started: str) -> None:
    with _section_for_update(cache_dir, fingerprint_id) as section:
        section.setdefault("peaks", {})[entry_key] = {"value": value, "method": method, "measured_at": started}


def _cached(cache_dir: Path, fingerprint_id: str, entry_key: str, measure, method: str) -> tuple:
    """(value, was cached): the entry from the file unless measured before the last refresh, or measure() and store
    it."""
    entry = _fresh_entry(cache_dir, fingerprint_id, entry_key)
    if entry is not None:
        return entry["value"], True
    started = _now()  # the start: a refresh during the measurement makes it stale
    value = measure()  # outside the lock: a measurement must not wait on, or hold up, another process
    _store(cache_dir, fingerprint_id, entry_key, value, method, started)
    return value, False


def refresh_peaks(cache_dir: Path, fingerprint_id: str | None = None) -> str:
    """Make every figure cached for this host and fingerprint stale: the next request measures again. A sweep calls
    it on each node before its first trial (sweep/nodes.py). Returns the refresh time."""
    fingerprint_id = fingerprint_id or host_fingerprint()["hw_fingerprint_id"]
    with _section_for_update(cache_dir, fingerprint_id) as section:
        section["refreshed_at"] = _now()
    return section["refreshed_at"]


# ---- what callers use ---------------------------------------------------------------------------
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
    reason = _unsupported(dtype_name)
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
    key = _entry_key(figure, dtype_name, threads, torch_kernel)
    entry = _fresh_entry(cache_dir, fingerprint_id, key)
    if entry is not None:  # its own method: the tries are those of the trial that measured it
        return {"peak_gflops": entry["value"], "peak_cached": True, "peak_method": entry["method"]}
    started = _now()  # the start: a refresh during the measurement makes it stale
    peak, tries, undisturbed = measure_undisturbed(measure, process_cpus(proc_root), threads, proc_root)
    method += tries
    if undisturbed:
        _store(cache_dir, fingerprint_id, key, peak, method, started)
    return {"peak_gflops": peak, "peak_cached": False, "peak_method": method}


def matmul_library(
    dtype_name: str, shape: tuple[int, int, int], threads: int, cache_dir: Path, fingerprint_id: str | None = None
) -> str:
    """probe_matmul_library's answer for shape (m, k, n), cached like the peaks: MKL's first verbose call costs
    0.2-0.7 s here (it times the CPU clock for its banner), more than a trial should pay every time."""
    fingerprint_id = fingerprint_id or host_fingerprint()["hw_fingerprint_id"]
    m, k, n = shape
    library, _ = _cached(
        cache_dir,
        fingerprint_id,
        _entry_key(f"library {m}x{k}x{n}", dtype_name, threads),
        lambda: probe_matmul_library(dtype_name, m, k, n),
        "one torch.nn.functional.linear watched through MKL and oneDNN verbose output",
    )
    return library


def memory_bandwidth_gbs(threads: int, cache_dir: Path, fingerprint_id: str | None = None) -> dict:
    """The cached triad bandwidth for this host, fingerprint and thread count, measuring it on a miss."""
    fingerprint_id = fingerprint_id or host_fingerprint()["hw_fingerprint_id"]
    array_bytes = triad_array_bytes()
    method = triad_method(array_bytes)
    gbs, cached = _cached(
        cache_dir,
        fingerprint_id,
        _entry_key("triad", "float32", threads),
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


def format_host_peaks(peaks: dict) -> str:
    """measure_host_peaks(...) as a small table for a terminal."""

    def cell(value, cached):
        return "-" if value is None else f"{value:.1f}" + (" (cached)" if cached else "")

    lines = [
        f"peaks on {peaks['host']} (fingerprint {peaks['fingerprint_id']}, torch {peaks['torch_cpu_capability']}, "
        f"{peaks['allowed_cpus']} CPUs allowed)",
        f"{'threads':>7}  {'fp32 GFLOP/s':>18}  {'bf16 GFLOP/s':>18}  {'triad GB/s':>18}",
    ]
    for row in peaks["peaks"]:
        lines.append(
            f"{row['threads']:>7}  {cell(row['fp32_gflops'], row['fp32_cached']):>18}  "
            f"{cell(row['bf16_gflops'], row['bf16_cached']):>18}  {cell(row['triad_gbs'], row['triad_cached']):>18}"
        )
    first = peaks["peaks"][0] if peaks["peaks"] else {}
    for key in ("fp32_method", "bf16_method", "triad_method"):
        if key in first:
            lines.append(f"{key.split('_')[0]}: {first[key]}")
    return "\n".join(lines)
