"""The hardware fingerprint: what a node is, assembled from the readers (proc_sysfs.py, software.py), read only,
never measured (microbench.py measures).

Two views over the same readers:
- `full_fingerprint()`: the nested, JSON-serialisable description `bench.py hw` prints (with
  py-cpuinfo, threadpoolctl after importing numpy and torch, torch's CPU capability);
- `host_fingerprint()`: flat, cheap `hw_`/`sw_` columns stored with every row (sysfs, /proc and
  package metadata; imports numpy for threadpoolctl, never torch).
And `fingerprint_id()`: the short hash of what changes a measured peak, which keys the peak cache.
"""

from __future__ import annotations

import functools
import hashlib
import json
import socket
from pathlib import Path

from hwctl.cores import SYSFS_ROOT
from hwctl.proc_sysfs import (
    PROC_ROOT,
    cpuinfo_file,
    read_caches,
    read_cpu,
    read_cpu_topology,
    read_cpufreq,
    read_kernel,
    read_memory,
    read_numa,
    read_rapl,
    read_turbo,
)
from hwctl.software import VERSIONED_PACKAGES, loaded_blas, package_versions, software_probes
from hwctl.theoretical_peak import host_theoretical_peak


# ---- the two views ----------------------------------------------------------------------------
def hardware_fingerprint(sysfs_root: Path = SYSFS_ROOT, proc_root: Path = PROC_ROOT) -> dict:
    """Everything cheap: sysfs, /proc and package metadata; no imports of numpy or torch."""
    return {
        "host": socket.gethostname(),
        "cpu": read_cpu(proc_root),
        "topology": read_cpu_topology(sysfs_root),
        "numa": read_numa(sysfs_root),
        "caches": read_caches(sysfs_root),
        "memory": read_memory(proc_root),
        "kernel": read_kernel(proc_root),
        "cpufreq": read_cpufreq(sysfs_root),
        "turbo": read_turbo(sysfs_root),
        "rapl": read_rapl(sysfs_root),
        # derived from cpu and cpufreq above, so no part of fingerprint_id: it changes when they do
        "theoretical_peak": host_theoretical_peak(sysfs_root, proc_root),
        "software": package_versions(),
    }


@functools.cache
def _py_cpuinfo() -> dict:
    try:
        import cpuinfo
    except ImportError:
        return {}
    info = cpuinfo.get_cpu_info()  # ~1 s: it runs CPUID in a child interpreter
    names = {
        "brand": "brand_raw",
        "vendor": "vendor_id_raw",
        "family": "family",
        "model_number": "model",
        "stepping": "stepping",
        "version": "cpuinfo_version_string",
    }
    return {key: info.get(name) for key, name in names.items()} | {
        "advertised_hz": (info.get("hz_advertised") or [None])[0]
    }


def full_fingerprint(sysfs_root: Path = SYSFS_ROOT, proc_root: Path = PROC_ROOT) -> dict:
    """The nested description of this node that `bench.py hw` prints."""
    fp = hardware_fingerprint(sysfs_root, proc_root)
    # py-cpuinfo describes the CPU this process runs on: only ask it when describing the real /proc/cpuinfo
    if cpuinfo_file(proc_root) == PROC_ROOT / "cpuinfo" and (extra := _py_cpuinfo()):
        fp["cpu"]["py_cpuinfo"] = extra
        fp["cpu"]["display"] = extra["brand"] or fp["cpu"]["model"]
    else:
        fp["cpu"]["display"] = fp["cpu"]["model"]
    fp["software"] |= software_probes()
    fp["fingerprint_id"] = fingerprint_id(fp)
    return fp


def fingerprint_parts(fp: dict) -> dict:
    """What changes a measured peak, so a changed value must invalidate cached peaks.

    torch's CPU capability is left out on purpose: it follows from the torch build and the ISA flags
    (both here) and ATEN_CPU_CAPABILITY, a per-process setting; reading it means importing torch,
    which host_fingerprint avoids. The peak cache key carries the capability of the measuring process.
    """
    cpufreq, kb = fp["cpufreq"], fp["memory"]["total_kb"]
    return {
        "cpu_vendor": fp["cpu"]["vendor"],
        "cpu_model": fp["cpu"]["model"],
        "arch": fp["cpu"]["arch"],
        "logical_cores": fp["topology"]["logical_cores"],
        "isa": fp["cpu"]["isa"],
        "kernel": fp["kernel"],
        "torch": fp["software"]["torch"],
        "memory_gib": round(kb / 2**20) if kb else None,
        "cpufreq_max_khz": cpufreq.get("max_khz"),
        "scaling_max_khz": cpufreq.get("scaling_max_khz"),
        "governor": cpufreq.get("governor"),
        "turbo": fp["turbo"]["enabled"],
    }


def fingerprint_id(fp: dict) -> str:
    """A short stable hash of fingerprint_parts(fp)."""
    canonical = json.dumps(fingerprint_parts(fp), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


@functools.cache
def host_fingerprint(sysfs_root: Path = SYSFS_ROOT, cpuinfo_path: Path = Path("/proc/cpuinfo")) -> dict:
    """Flat row columns. Cached per process: a trial's frequency/governor changes are recorded apart."""
    fp = hardware_fingerprint(sysfs_root, cpuinfo_path.parent)
    cpu, topo, caches, cpufreq = fp["cpu"], fp["topology"], fp["caches"], fp["cpufreq"]
    row = {
        "host": fp["host"],
        "hw_cpu_vendor": cpu["vendor"],
        "hw_cpu_model": cpu["model"],
        "hw_arch": cpu["arch"],
        "hw_logical_cores": topo["logical_cores"],
        "hw_physical_cores": topo["physical_cores"],
        "hw_sockets": topo["sockets"],
        "hw_smt": topo["threads_per_core"],
        "hw_numa_nodes": len(fp["numa"]["nodes"]) or None,
        "hw_l1d_kb": caches.get("L1d", {}).get("size_kb"),
        "hw_l2_kb": caches.get("L2", {}).get("size_kb"),
        "hw_l3_kb": caches.get("L3", {}).get("size_kb"),
        "hw_memory_gb": fp["memory"]["total_gib"],  # GiB, as peak_rss_mb is MiB
        "hw_isa": ",".join(cpu["isa"]),
        "hw_kernel": fp["kernel"],
        "hw_cpufreq_driver": cpufreq.get("driver"),
        "hw_governor": cpufreq.get("governor"),
        "hw_turbo": fp["turbo"]["enabled"],
        "hw_rapl": fp["rapl"]["available"],
        "hw_fingerprint_id": fingerprint_id(fp),
        "hw_theoretical_fp32_gflops_per_core": fp["theoretical_peak"]["fp32_gflops_per_core"],
        "hw_theoretical_bf16_gflops_per_core": fp["theoretical_peak"]["bf16_gflops_per_core"],
        "hw_theoretical_clock_ghz": fp["theoretical_peak"]["clock_ghz"],
        "hw_theoretical_clock_source": fp["theoretical_peak"]["clock_source"],
        "sw_python": fp["software"]["python"],
        "sw_blas": loaded_blas(),
    }
    for package in VERSIONED_PACKAGES:
        row[f"sw_{package}"] = fp["software"][package]
    return row
