"""A row's efficiencies against the machine, beside its `mfu` (which divides by the trial's own library's peak):

- efficiency_vs_machine_peak = achieved_gflops / machine_peak_gflops, the fastest matmul any installed library
  reaches at the trial's threads, CPUs and dtype (machine_peak.py): how far the trial is from what this machine's
  software can do;
- efficiency_vs_theoretical_peak = achieved_gflops / theoretical_peak_gflops, FMA units x lanes x 2 x clock x the
  physical cores of the trial's threads (theoretical_peak.py): how far it is from what the silicon can do.

Called by the worker after the timed region. A cached machine peak is read here (0.6 ms; the host's fingerprint id
comes in the launcher's payload); a miss is measured in a process of its own (`python -m hwctl.machine_peak`, each
library's child adding its import and measurement: seconds, once per node and conditions): this module imports no
framework, so the worker stays framework-free.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hwctl.cores import SYSFS_ROOT
from hwctl.peak_cache import entry_key, fresh_entry
from hwctl.theoretical_peak import host_theoretical_peak, trial_theoretical_peak

DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16"}
FIGURE = "machine best matmul"  # hwctl/machine_peak.py's cache entry (it imports this name)
MACHINE_PEAK_TIMEOUT_S = 900


def efficiencies(achieved_gflops: float, machine_peak_gflops: float | None, theoretical_peak_gflops: float | None):
    """{efficiency_vs_machine_peak, efficiency_vs_theoretical_peak}: achieved over each peak, None without it."""
    return {
        "efficiency_vs_machine_peak": achieved_gflops / machine_peak_gflops if machine_peak_gflops else None,
        "efficiency_vs_theoretical_peak": achieved_gflops / theoretical_peak_gflops
        if theoretical_peak_gflops
        else None,
    }


def cached_machine_peak(
    peak_dtype: str, threads: int, cpus: list[int], cache_dir: Path, fingerprint_id: str
) -> dict | None:
    """The cached figure, read here as `python -m hwctl.machine_peak` would key it (this thread on the trial's CPUs,
    XLA_FLAGS left out), or None: a miss, which that process measures. Saves a trial the ~0.3 s of the process."""
    mask, flags = os.sched_getaffinity(0), os.environ.pop("XLA_FLAGS", None)
    try:
        os.sched_setaffinity(0, cpus)
        key = entry_key(FIGURE, DTYPE_NAMES[peak_dtype], threads)
        entry = fresh_entry(cache_dir, fingerprint_id, key)
    finally:
        os.sched_setaffinity(0, mask)
        if flags is not None:
            os.environ["XLA_FLAGS"] = flags
    return None if entry is None else entry["value"] | {"machine_peak_cached": True}


def read_machine_peak(
    peak_dtype: str, threads: int, cpus: list[int], cache_dir: Path, fingerprint_id: str | None = None
) -> dict:
    """machine_peak.machine_matmul_peak(...): from the cache here, else from its own process; on a failure the
    columns are None and machine_peak_method says why."""
    # the host's fingerprint id comes from the launcher: reading it here would import what hwctl.software imports
    cached = cached_machine_peak(peak_dtype, threads, cpus, cache_dir, fingerprint_id) if fingerprint_id else None
    if cached is not None:
        return cached
    command = [sys.executable, "-m", "hwctl.machine_peak", DTYPE_NAMES[peak_dtype], str(threads)]
    command += [",".join(map(str, cpus)), str(cache_dir), *([fingerprint_id] if fingerprint_id else [])]
    done = subprocess.run(command, capture_output=True, text=True, timeout=MACHINE_PEAK_TIMEOUT_S)
    lines = done.stdout.strip().splitlines()
    if done.returncode == 0 and lines:
        return json.loads(lines[-1])
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
    return {
        "machine_peak_gflops": None,
        "machine_peak_library": None,
        "machine_peak_method": f"not measured: python -m hwctl.machine_peak exited {done.returncode}: {tail}",
        "machine_peak_cached": False,
    }


def machine_efficiency_columns(
    achieved_gflops: float,
    peak_dtype: str,
    threads: int,
    cpus: list[int],
    cache_dir: Path,
    sysfs_root: Path = SYSFS_ROOT,
    fingerprint_id: str | None = None,
) -> dict:
    """The machine-peak and theoretical-peak columns of a row whose matmuls run in peak_dtype ("fp32", "bf16");
    `fingerprint_id`: the host's (the launcher's payload), for the cache."""
    machine = read_machine_peak(peak_dtype, threads, cpus, cache_dir, fingerprint_id)
    theoretical, method = trial_theoretical_peak(
        host_theoretical_peak(sysfs_root), peak_dtype, threads, cpus, sysfs_root
    )
    return (
        machine
        | {"theoretical_peak_gflops": theoretical, "theoretical_peak_method": method}
        | efficiencies(achieved_gflops, machine["machine_peak_gflops"], theoretical)
    )
