"""What /proc and sysfs say about this node: one reader per hardware section of the fingerprint (cpu, topology,
NUMA, caches, memory, kernel, cpufreq, turbo, RAPL) and the small parsers under them.

Read only, never measured: whatever cannot be read comes back unavailable with the reason, never guessed. Both roots
are parameters so tests describe simulated machines (2 sockets, NUMA, cpufreq) without mocks.
"""

from __future__ import annotations

import os
import platform
from collections import Counter
from pathlib import Path

from hwctl.cores import parse_cpu_list, read_topology

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


def read_memory(proc_root: Path) -> dict:
    memory_kb = meminfo_kb(_read(proc_root / "meminfo") or "").get("MemTotal")
    return {"total_kb": memory_kb, "total_gib": round(memory_kb / 2**20, 1) if memory_kb else None}


def read_kernel(proc_root: Path) -> str:
    return _read(proc_root / "sys/kernel/osrelease") or platform.release()


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
