"""The software a measured figure depends on: package versions, torch's build (CPU capability, BLAS, oneDNN,
threads) and the thread pools loaded in this process (threadpoolctl, after importing numpy so its BLAS is listed).
Read only; a package that is not installed is None."""

from __future__ import annotations

import functools
import platform
from importlib import metadata

VERSIONED_PACKAGES = ("torch", "numpy", "ray", "jax")
# what the fingerprint keeps of each threadpoolctl.threadpool_info() entry
THREADPOOL_FIELDS = (
    "user_api",
    "internal_api",
    "prefix",
    "version",
    "num_threads",
    "threading_layer",
    "architecture",
    "filepath",
)


def package_version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def package_versions() -> dict:
    """{"python": "3.11.7", "torch": ..., "numpy": ..., "ray": ..., "jax": ...}: package metadata, no imports."""
    return {"python": platform.python_version()} | {p: package_version(p) for p in VERSIONED_PACKAGES}


def blas_libraries(threadpools: list[dict]) -> list[str]:
    return sorted({p["internal_api"] for p in threadpools if p.get("user_api") == "blas"})


def loaded_blas() -> str | None:
    """The BLAS libraries numpy loads, comma-separated (imports numpy, never torch)."""
    import numpy  # noqa: F401 - its BLAS must be loaded for threadpoolctl to list it
    import threadpoolctl

    return ",".join(blas_libraries(threadpoolctl.threadpool_info())) or None


@functools.cache
def software_probes() -> dict:
    """torch's CPU capability, BLAS, oneDNN and thread count (where torch is installed) and the loaded thread pools.
    Imports numpy and torch."""
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
    probes["threadpools"] = [{k: p.get(k) for k in THREADPOOL_FIELDS} for p in pools]
    probes["blas"] = blas_libraries(pools)
    return probes
