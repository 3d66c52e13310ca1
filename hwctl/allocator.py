"""Memory allocators a trial can preload (LD_PRELOAD), found in the usual library directories."""

from __future__ import annotations

import glob
import os
import sysconfig
from pathlib import Path

LIBRARIES = {
    "jemalloc": ("libjemalloc.so.2", "libjemalloc.so"),
    "tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4", "libtcmalloc_minimal.so", "libtcmalloc.so"),
}
DEBIAN_PACKAGES = {"jemalloc": "libjemalloc2", "tcmalloc": "libtcmalloc-minimal4"}


def _search_dirs() -> list[str]:
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    dirs = [f"/usr/lib/{multiarch}", f"/lib/{multiarch}", "/usr/lib64", "/usr/lib", "/usr/local/lib"]
    dirs += glob.glob("/usr/lib/*-linux-gnu")
    return [d for d in dict.fromkeys(dirs) if d and Path(d).is_dir()]


def find_allocator(name: str) -> str | None:
    """Path of the shared library for `name`, or None if it is not installed ('default' needs none)."""
    for directory in _search_dirs():
        for filename in LIBRARIES[name]:
            path = Path(directory) / filename
            if path.exists():
                return os.path.realpath(path)  # the name the dynamic loader reports in /proc/PID/maps
    return None


def missing_reason(name: str) -> str:
    return f"allocator={name}: {LIBRARIES[name][0]} not found (install the Debian package {DEBIAN_PACKAGES[name]})"
