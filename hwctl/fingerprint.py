"""The host fingerprint stored with every row (read only, cheap: no benchmarks here).

Columns carry a `hw_` prefix: CPU vendor and model, logical and physical cores, sockets, the ISA
flags that matter for training kernels, kernel and software versions.
"""

from __future__ import annotations

import functools
import platform
import socket
from importlib import metadata
from pathlib import Path

from hwctl.cores import SYSFS_ROOT, read_topology

ISA_FLAGS = (
    "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16",
    "avx_vnni", "amx_tile", "amx_bf16", "amx_int8",
)  # fmt: skip
VERSIONED_PACKAGES = ("torch", "numpy", "ray")


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


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


@functools.cache
def host_fingerprint(sysfs_root: Path = SYSFS_ROOT, cpuinfo_path: Path = Path("/proc/cpuinfo")) -> dict:
    try:
        info = cpuinfo_fields(cpuinfo_path.read_text())
    except OSError:
        info = {}
    flags = set(info.get("flags", "").split())
    cpus = read_topology(sysfs_root, allowed=None)
    fingerprint = {
        "host": socket.gethostname(),
        "hw_cpu_vendor": info.get("vendor_id"),
        "hw_cpu_model": info.get("model name") or platform.processor() or None,
        "hw_arch": platform.machine(),
        "hw_logical_cores": len(cpus),
        "hw_physical_cores": len({(c.package, c.core) for c in cpus}),
        "hw_sockets": len({c.package for c in cpus}),
        "hw_isa": ",".join(f for f in ISA_FLAGS if f in flags),
        "hw_kernel": platform.release(),
        "sw_python": platform.python_version(),
    }
    for package in VERSIONED_PACKAGES:
        fingerprint[f"sw_{package}"] = _version(package)
    return fingerprint
