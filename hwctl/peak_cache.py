"""The cache of measured peaks, `cache_dir/host_peaks.json`: its keys, its reads and locked writes, and its refresh.

One section per host + fingerprint id (fingerprint.py: CPU, cores, ISA, kernel, torch, memory, cpufreq limits,
governor, turbo), so a changed machine or setting measures again while the old figures stay for the old
fingerprint. Within a section an entry is keyed by figure, dtype, threads and what the measuring process runs under
(`measuring_conditions`): its CPUs in OpenMP place order, the OpenMP binding, the preloaded allocator, torch's CPU
capability and the oneDNN/MKL ISA caps. A sweep calls `refresh_peaks` on each node before its first trial: entries
measured before that are stale, so each set of conditions is measured once per sweep, by its first trial, and
reused by the rest.

Why a cache and not a measurement in every worker (measured on the 2-core development VM, idle): a
peak costs 0.6 s of worker time on 2 threads, 1.05 s on 1 (fp32), 0.4-0.5 s more for bf16, and the
library probe 0.2-0.7 s (MKL's first verbose call times the CPU clock): 10-20% of a quick-plan trial
(~8 s). The quick plan's 67 trials here run under 9 sets of conditions (18 with the Linear shapes the
library probe keys on): about 10 s per sweep instead of 55-90 s. A hit costs under 1 ms.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock

from hwctl.cores import format_cpu_list
from hwctl.files import atomic_write_text

CACHE_FILE = "host_peaks.json"
# ISA caps a trial may set besides ATEN_CPU_CAPABILITY (which the capability in the key reflects):
# oneDNN runs the bf16 matmuls, MKL the fp32 ones
ISA_CAP_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def _section_key(fingerprint_id: str) -> str:
    return f"{socket.gethostname()}|{fingerprint_id}"


def timestamp() -> str:
    # microseconds: an entry is stale when measured before the section's refreshed_at, compared as text
    return datetime.now(UTC).isoformat(timespec="microseconds")


def measuring_conditions(kernel_conditions: str = "") -> str:
    """What the calling process measures under, besides the host's fingerprint and its thread count; XLA_FLAGS where
    set. `kernel_conditions`: what the kernel's own library adds (microbench.torch_conditions() for a torch kernel:
    torch's CPU capability and fp32 routing; a jax or numpy kernel adds nothing). No framework is imported here."""
    # OMP_PLACES: once OpenMP starts, the main thread's own mask is only the first place; an abstract one (cores,
    # threads) names no CPUs, so the worker's mask as it started (BENCH_TRIAL_CPUS, set by trainables/worker.py) too
    places = os.environ.get("OMP_PLACES")
    started_on = os.environ.get("BENCH_TRIAL_CPUS")
    cpus = f"places={places}" if places else f"cpus={format_cpu_list(sorted(os.sched_getaffinity(0)))}"
    if places and started_on and not places.startswith("{"):
        cpus += f"|cpus={started_on}"
    preload = os.environ.get("LD_PRELOAD", "")
    allocator = ",".join(Path(p).name for p in preload.replace(":", " ").split()) or "glibc"
    key = f"{cpus}|bind={os.environ.get('OMP_PROC_BIND', 'none')}|allocator={allocator}" + kernel_conditions
    # set only where a trial asks for them, so the keys of every earlier figure hold
    variables = (*ISA_CAP_VARIABLES, "XLA_FLAGS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
    return key + "".join(f"|{name}={os.environ[name]}" for name in variables if os.environ.get(name))


def entry_key(figure: str, dtype_name: str, threads: int, kernel_conditions: str = "") -> str:
    return f"{figure}|{dtype_name}|threads={threads}|{measuring_conditions(kernel_conditions)}"


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
    with FileLock(path.with_name(f".{CACHE_FILE}.lock")):  # flock(2) on Linux, released on exit even by a crash
        cache = _read_cache(path)
        section = cache.setdefault(
            _section_key(fingerprint_id), {"host": socket.gethostname(), "fingerprint_id": fingerprint_id}
        )
        yield section
        atomic_write_text(path, json.dumps(cache, indent=1, sort_keys=True))


def fresh_entry(cache_dir: Path, fingerprint_id: str, key: str) -> dict | None:
    """The cached entry ({"value", "method", "measured_at"}), or None where absent or measured before the last
    refresh."""
    section = _read_cache(Path(cache_dir) / CACHE_FILE).get(_section_key(fingerprint_id), {})
    entry = section.get("peaks", {}).get(key)
    if entry is not None and entry.get("measured_at", "") >= section.get("refreshed_at", ""):
        return entry
    return None


def store_entry(cache_dir: Path, fingerprint_id: str, key: str, value, method: str, started: str) -> None:
    """Store a figure measured from `started` on (timestamp()): a refresh since then leaves it stale."""
    with _section_for_update(cache_dir, fingerprint_id) as section:
        section.setdefault("peaks", {})[key] = {"value": value, "method": method, "measured_at": started}


def cached_or_measured(cache_dir: Path, fingerprint_id: str, key: str, measure, method: str) -> tuple:
    """(value, was cached): the entry from the file unless measured before the last refresh, or measure() and store
    it."""
    entry = fresh_entry(cache_dir, fingerprint_id, key)
    if entry is not None:
        return entry["value"], True
    started = timestamp()  # the start: a refresh during the measurement makes it stale
    value = measure()  # outside the lock: a measurement must not wait on, or hold up, another process
    store_entry(cache_dir, fingerprint_id, key, value, method, started)
    return value, False


def refresh_peaks(cache_dir: Path, fingerprint_id: str) -> str:
    """Make every figure cached for this host and fingerprint stale: the next request measures again. A sweep calls
    it on each node before its first trial (sweep/nodes.py). Returns the refresh time."""
    with _section_for_update(cache_dir, fingerprint_id) as section:
        section["refreshed_at"] = timestamp()
    return section["refreshed_at"]
