"""A trial's memory binding: the NUMA nodes from sysfs, the numactl prefix that binds the worker, and the placement
read back from /proc/<pid>/numa_maps.

numactl sets the policy and then execs the worker, so the worker keeps numactl's pid and every page it touches
follows the policy from its first instruction; the CPUs stay the pinning's (no --cpunodebind). The sysfs root is a
parameter so tests run on simulated trees.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

from hwctl.cores import SYSFS_ROOT, format_cpu_list, parse_cpu_list

NUMACTL_OPTIONS = {"local": "--localalloc", "interleave": "--interleave=all"}  # a node id N: --membind=N
_NODE_PAGES = re.compile(r"^N(\d+)=(\d+)$")


def read_nodes(sysfs_root: Path = SYSFS_ROOT) -> dict[int, list[int]]:
    """{node id: its CPUs} from <sysfs>/devices/system/node/node*/cpulist; a kernel without NUMA support has no such
    folder and is one node, 0."""
    nodes = {}
    for path in (sysfs_root / "devices/system/node").glob("node[0-9]*"):
        cpulist = path / "cpulist"
        nodes[int(path.name[4:])] = parse_cpu_list(cpulist.read_text()) if cpulist.exists() else []
    return dict(sorted(nodes.items())) or {0: []}


def _nodes_with_memory(sysfs_root: Path) -> set[int] | None:
    path = sysfs_root / "devices/system/node/has_memory"
    return set(parse_cpu_list(path.read_text())) if path.exists() else None


def numa_unsupported_reason(numa: str | None, sysfs_root: Path = SYSFS_ROOT, numactl: str | None = None) -> str | None:
    """Why this node cannot bind a trial's memory as `numa` asks, or None. numactl: its path (default: found on
    PATH)."""
    if numa is None:
        return None
    if (numactl or shutil.which("numactl")) is None:
        return f"numa={numa!r} binds memory with numactl, which this node lacks (install the numactl package)"
    if numa == "local":
        return _refused(numa, sysfs_root, numactl)
    nodes = read_nodes(sysfs_root)
    if len(nodes) == 1:
        (only,) = nodes
        return (
            f"numa={numa!r} needs several NUMA nodes: this node has one (node {only}), where only numa='local' applies"
        )
    if numa == "interleave":
        return _refused(numa, sysfs_root, numactl)
    if int(numa) not in nodes:
        return f"numa={numa!r}: no such NUMA node (this node has nodes {format_cpu_list(nodes)})"
    with_memory = _nodes_with_memory(sysfs_root)
    if with_memory is not None and int(numa) not in with_memory:
        return f"numa={numa!r}: NUMA node {numa} has no memory (nodes with memory: {format_cpu_list(with_memory)})"
    return _refused(numa, sysfs_root, numactl)


def _refused(numa: str, sysfs_root: Path, numactl: str | None) -> str | None:
    """Whether numactl really sets the policy here (a container's seccomp profile may refuse set_mempolicy); asked
    of the real machine only, not of a simulated sysfs."""
    if sysfs_root != SYSFS_ROOT:
        return None
    error = _numactl_error(tuple(numa_command(numa, numactl)))
    return f"numa={numa!r}: numactl cannot set the policy here ({error})" if error else None


@functools.cache
def _numactl_error(prefix: tuple[str, ...]) -> str | None:
    try:
        done = subprocess.run([*prefix, "true"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1] if done.returncode else None


def numa_command(numa: str | None, numactl: str | None = None) -> list[str]:
    """The argv prefix that starts the worker under the policy (no shell); [] for auto: the kernel's default."""
    if numa is None:
        return []
    option = NUMACTL_OPTIONS.get(numa) or f"--membind={int(numa)}"
    return [numactl or shutil.which("numactl") or "numactl", option]


def parse_numa_maps(text: str, page_kb: int | None = None) -> tuple[str | None, dict[str, int]]:
    """(the memory policy of the heap, or the policy over the most resident pages where no line is the heap; the
    resident pages per node, {"N0": pages, ...}) from numa_maps text. Pages are counted in base pages of `page_kb`
    (default: this system's), so a hugetlbfs mapping's 2 MiB pages add up with the rest."""
    page_kb = page_kb or os.sysconf("SC_PAGE_SIZE") // 1024
    pages: Counter[str] = Counter()
    by_policy: Counter[str] = Counter()
    heap_policy = None
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) < 2:
            continue
        # "prefer (many):0-1" is one policy with a space in it
        policy_end = 2
        while policy_end < len(fields) and fields[policy_end].startswith("("):
            policy_end += 1
        policy = " ".join(fields[1:policy_end])
        scale, counts = 1.0, {}
        for field in fields[policy_end:]:
            if field.startswith("kernelpagesize_kB="):
                scale = int(field.split("=", 1)[1]) / page_kb
            elif match := _NODE_PAGES.match(field):
                counts[f"N{match.group(1)}"] = int(match.group(2))
        for node, count in counts.items():
            pages[node] += round(count * scale)
        by_policy[policy] += round(sum(counts.values()) * scale)
        if "heap" in fields[policy_end:] and heap_policy is None:
            heap_policy = policy
    dominant = by_policy.most_common(1)[0][0] if by_policy else None
    return heap_policy or dominant, dict(sorted(pages.items(), key=lambda item: int(item[0][1:])))


def read_numa_placement(pid: int | str = "self") -> dict:
    """The row's numa_policy and numa_pages for a process, read now."""
    try:
        text = Path(f"/proc/{pid}/numa_maps").read_text()
    except OSError:  # a kernel without NUMA support has no numa_maps
        return {"numa_policy": None, "numa_pages": None}
    policy, pages = parse_numa_maps(text)
    return {"numa_policy": policy, "numa_pages": pages}
