"""The hardware fingerprint: what a node is, read only, never measured (microbench.py measures).

Two views over the same readers:
- `full_fingerprint()`: the nested, JSON-serialisable description `bench.py hw` prints (with
  py-cpuinfo, threadpoolctl after importing numpy and torch, torch's CPU capability);
- `host_fingerprint()`: flat, cheap `hw_`/`sw_` columns stored with every row (sysfs, /proc and
  package metadata; imports numpy for threadpoolctl, never torch).
Whatever cannot be read is reported as unavailable with the reason, never guessed. Both roots are
parameters so tests describe simulated machines (2 sockets, NUMA, cpufreq) without mocks.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import socket
from collections import Counter
from importlib import metadata
from pathlib import Path

from hwctl.cores import SYSFS_ROOT, parse_cpu_list, read_topology

PROC_ROOT = Path("/proc")
# A testing hook: a cpuinfo file read instead of /proc/cpuinfo, so the suite can be run as if on another CPU
# (tests/fixtures/cpuinfo-*). Worker processes inherit it with the environment. Only the model and the ISA flags
# change: torch's dispatch, the cores and the kernel stay the real machine's.
CPUINFO_ENV = "BENCH_CPUINFO"
ISA_FLAGS_X86 = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)
# aarch64 lists its features in the "Features" line: NEON, SVE, bf16 and int8 matmul
ISA_FLAGS_ARM = ("asimd", "sve", "sve2", "bf16", "i8mm")
ISA_FLAGS = ISA_FLAGS_X86 + ISA_FLAGS_ARM
VERSIONED_PACKAGES = ("torch", "numpy", "ray", "jax")


# ---- small readers ----------------------------------------------------------------------------
def cpuinfo_fields(text: str) -> dict[str, str]:
    """The first processor block of /proc/cpuinfo as a dict."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpuinfo_file(proc_root: Path = PROC_ROOT) -> Path:
    """proc_root/cpuinfo, or, for the real /proc, the file BENCH_CPUINFO names when it is set."""
    simulated = os.environ.get(CPUINFO_ENV)
    return Path(simulated) if simulated and proc_root == PROC_ROOT else proc_root / "cpuinfo"


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    try:
        return int(_read(path))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def meminfo_kb(text: str) -> dict[str, int]:
    """/proc/meminfo or a NUMA node's meminfo ("Node 0 MemTotal:  123 kB") -> {"MemTotal": 123}."""
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key.split()[-1]] = int(parts[0])
    return values


def cpu_ranges(cpus) -> str:
    """[0, 1, 2, 3, 8] -> '0-3,8' (sysfs's own spelling)."""
    runs: list[list[int]] = []
    for cpu in sorted(set(cpus)):
        if runs and cpu == runs[-1][1] + 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(f"{a}-{b}" if b > a else str(a) for a, b in runs)


def _size_kb(text: str) -> int | None:
    units = {"K": 1, "M": 1024, "G": 1024**2}
    text = text.strip().upper()
    if text and text[-1] in units:
        return int(text[:-1]) * units[text[-1]]
    return int(text) // 1024 if text.isdigit() else None


# ---- hardware sections ------------------------------------------------------------------------
def read_cpu(proc_root: Path) -> dict:
    info = cpuinfo_fields(_read(cpuinfo_file(proc_root)) or "")
    # aarch64 has "Features" and no "model name"
    flags = set((info.get("flags") or info.get("Features") or "").split())
    relevant = ISA_FLAGS_ARM if platform.machine() in ("aarch64", "arm64") else ISA_FLAGS_X86
    return {
        "vendor": info.get("vendor_id") or info.get("CPU implementer"),
        "model": info.get("model name") or platform.processor() or None,
        "source": str(cpuinfo_file(proc_root)),
        "arch": platform.machine(),
        "isa": [f for f in ISA_FLAGS if f in flags],
        "isa_missing": [f for f in relevant if f not in flags],
    }


def read_cpu_topology(sysfs_root: Path) -> dict:
    cpus = read_topology(sysfs_root, allowed=None)
    per_core = Counter((c.package, c.core) for c in cpus)
    return {
        "sockets": len({c.package for c in cpus}),
        "physical_cores": len(per_core),
        "logical_cores": len(cpus),
        "threads_per_core": max(per_core.values(), default=None),
        "smt_active": {"1": True, "0": False}.get(_read(sysfs_root / "devices/system/cpu/smt/active") or ""),
        "cpus": cpu_ranges(c.cpu for c in cpus),
    }


def read_numa(sysfs_root: Path) -> dict:
    base = sysfs_root / "devices/system/node"
    dirs = sorted(base.glob("node[0-9]*"), key=lambda p: int(p.name[4:]))
    if not dirs:
        return {"available": False, "reason": f"no NUMA node in {base}", "nodes": []}
    nodes = []
    for d in dirs:
        memory = meminfo_kb(_read(d / "meminfo") or "")
        cpus = parse_cpu_list(_read(d / "cpulist") or "")
        nodes.append({"node": int(d.name[4:]), "cpus": cpu_ranges(cpus), "memory_kb": memory.get("MemTotal")})
    return {"available": True, "nodes": nodes}


def read_caches(sysfs_root: Path) -> dict:
    """Cache instances per level, deduplicated by the CPUs that share them: {"L3": {...}}."""
    cpu_dir = sysfs_root / "devices/system/cpu"
    seen: dict[tuple, dict] = {}
    for index in sorted(cpu_dir.glob("cpu[0-9]*/cache/index[0-9]*")):
        level, kind, size = _read_int(index / "level"), _read(index / "type"), _read(index / "size")
        shared = _read(index / "shared_cpu_list")
        if level is None or kind is None or size is None or shared is None:
            continue
        cpus = cpu_ranges(parse_cpu_list(shared))
        seen.setdefault((level, kind, cpus), {"size_kb": _size_kb(size), "cpus": cpus})
    caches: dict[str, dict] = {}
    for (level, kind, _), instance in sorted(seen.items(), key=lambda kv: (kv[0][:2], parse_cpu_list(kv[0][2]))):
        name = f"L{level}" + {"Data": "d", "Instruction": "i"}.get(kind, "")
        entry = caches.setdefault(name, {"level": level, "type": kind, "instances": []})
        entry["instances"].append(instance)
    for entry in caches.values():
        # hybrid CPUs have instances of different sizes: the largest is the one to compare machines by
        entry["size_kb"] = max(i["size_kb"] or 0 for i in entry["instances"]) or None
        entry["count"] = len(entry["instances"])
        entry["total_kb"] = sum(i["size_kb"] or 0 for i in entry["instances"]) or None
    return caches


def read_cpufreq(sysfs_root: Path) -> dict:
    base = sysfs_root / "devices/system/cpu/cpufreq"
    dirs = sorted(base.glob("policy[0-9]*"), key=lambda p: int(p.name[6:]))
    if not dirs:
        return {"available": False, "reason": f"no cpufreq policy in {base}"}
    files = {
        "driver": "scaling_driver",
        "governor": "scaling_governor",
        "cpuinfo_min_khz": "cpuinfo_min_freq",
        "cpuinfo_max_khz": "cpuinfo_max_freq",
        "scaling_min_khz": "scaling_min_freq",
        "scaling_max_khz": "scaling_max_freq",
        "base_khz": "base_frequency",
    }
    policies = []
    for d in dirs:
        policy = {"policy": d.name, "cpus": _read(d / "related_cpus") or _read(d / "affected_cpus")}
        for key, name in files.items():
            policy[key] = _read_int(d / name) if key.endswith("_khz") else _read(d / name)
        policy["available_governors"] = (_read(d / "scaling_available_governors") or "").split() or None
        policies.append(policy)

    def summary(key, pick):
        values = [p[key] for p in policies if p[key] is not None]
        return pick(values) if values else None

    def joined(values):
        return ",".join(sorted(set(values)))

    return {
        "available": True,
        "driver": summary("driver", joined),
        "governor": summary("governor", joined),  # "a,b" when policies disagree
        "min_khz": summary("cpuinfo_min_khz", min),
        "max_khz": summary("cpuinfo_max_khz", max),
        "scaling_min_khz": summary("scaling_min_khz", min),
        "scaling_max_khz": summary("scaling_max_khz", max),
        "base_khz": summary("base_khz", max),
        "policies": policies,
    }


def read_turbo(sysfs_root: Path) -> dict:
    cpu_dir = sysfs_root / "devices/system/cpu"
    no_turbo = _read(cpu_dir / "intel_pstate/no_turbo")
    if no_turbo is not None:
        return {"available": True, "enabled": no_turbo == "0", "control": str(cpu_dir / "intel_pstate/no_turbo")}
    boost = _read(cpu_dir / "cpufreq/boost")
    if boost is not None:
        return {"available": True, "enabled": boost == "1", "control": str(cpu_dir / "cpufreq/boost")}
    # amd-pstate and newer kernels put boost in each policy
    per_policy = [v for v in (_read(p / "boost") for p in cpu_dir.glob("cpufreq/policy[0-9]*/boost")) if v]
    if per_policy:
        return {"available": True, "enabled": all(v == "1" for v in per_policy), "control": "cpufreq/policy*/boost"}
    reason = f"none of intel_pstate/no_turbo, cpufreq/boost, cpufreq/policy*/boost exists in {cpu_dir}"
    return {"available": False, "enabled": None, "reason": reason}


def read_rapl(sysfs_root: Path) -> dict:
    base = sysfs_root / "class/powercap"
    zones = sorted(base.glob("intel-rapl:*"))
    if not zones:
        return {"available": False, "reason": f"no intel-rapl zone in {base}", "domains": []}
    # energy_uj is root-only on kernels since 5.10 (a side channel): readable is what matters
    domains = [
        {"zone": z.name, "name": _read(z / "name"), "readable": _read_int(z / "energy_uj") is not None} for z in zones
    ]
    result = {"available": any(d["readable"] for d in domains), "domains": domains}
    if not result["available"]:
        result["reason"] = f"energy_uj not readable in {base}/intel-rapl:* (root needed?)"
    return result


# ---- the two views ----------------------------------------------------------------------------
def hardware_fingerprint(sysfs_root: Path = SYSFS_ROOT, proc_root: Path = PROC_ROOT) -> dict:
    """Everything cheap: sysfs, /proc and package metadata; no imports of numpy or torch."""
    memory_kb = meminfo_kb(_read(proc_root / "meminfo") or "").get("MemTotal")
    return {
        "host": socket.gethostname(),
        "cpu": read_cpu(proc_root),
        "topology": read_cpu_topology(sysfs_root),
        "numa": read_numa(sysfs_root),
        "caches": read_caches(sysfs_root),
        "memory": {"total_kb": memory_kb, "total_gib": round(memory_kb / 2**20, 1) if memory_kb else None},
        "kernel": _read(proc_root / "sys/kernel/osrelease") or platform.release(),
        "cpufreq": read_cpufreq(sysfs_root),
        "turbo": read_turbo(sysfs_root),
        "rapl": read_rapl(sysfs_root),
        "software": {"python": platform.python_version()} | {p: _version(p) for p in VERSIONED_PACKAGES},
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


def blas_libraries(threadpools: list[dict]) -> list[str]:
    return sorted({p["internal_api"] for p in threadpools if p.get("user_api") == "blas"})


@functools.cache
def _software_probes() -> dict:
    import numpy  # noqa: F401 - loads its BLAS so threadpoolctl sees it
    import threadpoolctl

    probes: dict = {"torch_cpu_capability": None, "torch_blas": None}
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        probes["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        config = torch.__config__.show().replace(",", " ").split()
        probes["torch_blas"] = next((p.split("=", 1)[1] for p in config if p.startswith("BLAS_INFO=")), None)
        probes["torch_mkldnn"] = torch.backends.mkldnn.is_available()
        probes["torch_threads"] = torch.get_num_threads()
    pools = threadpoolctl.threadpool_info()
    keep = (
        "user_api",
        "internal_api",
        "prefix",
        "version",
        "num_threads",
        "threading_layer",
        "architecture",
        "filepath",
    )
    probes["threadpools"] = [{k: p.get(k) for k in keep} for p in pools]
    probes["blas"] = blas_libraries(pools)
    return probes


def full_fingerprint(sysfs_root: Path = SYSFS_ROOT, proc_root: Path = PROC_ROOT) -> dict:
    """The nested description of this node that `bench.py hw` prints."""
    fp = hardware_fingerprint(sysfs_root, proc_root)
    # py-cpuinfo describes the CPU this process runs on: only ask it when describing the real /proc/cpuinfo
    if cpuinfo_file(proc_root) == PROC_ROOT / "cpuinfo" and (extra := _py_cpuinfo()):
        fp["cpu"]["py_cpuinfo"] = extra
        fp["cpu"]["display"] = extra["brand"] or fp["cpu"]["model"]
    else:
        fp["cpu"]["display"] = fp["cpu"]["model"]
    fp["software"] |= _software_probes()
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
    import numpy  # noqa: F401 - its BLAS must be loaded for threadpoolctl to list it
    import threadpoolctl

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
        "sw_python": fp["software"]["python"],
        "sw_blas": ",".join(blas_libraries(threadpoolctl.threadpool_info())) or None,
    }
    for package in VERSIONED_PACKAGES:
        row[f"sw_{package}"] = fp["software"][package]
    return row
