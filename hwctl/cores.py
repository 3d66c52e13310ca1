"""Which concrete cores a trial gets: CPU topology from sysfs and the compact/spread orders.

Ray and the OS count CPUs; pinning needs ids. `compact` fills one socket's physical cores first and
takes SMT siblings only after every physical core is used; `spread` deals cores round-robin over
the sockets (then physical cores before siblings, as compact). `smt=siblings` instead takes whole
SMT sibling pairs (4 threads: 2 physical cores x 2 siblings), the cores in the policy's order. The
sysfs root is a parameter so tests run on simulated trees.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

SYSFS_ROOT = Path("/sys")


@dataclass(frozen=True)
class Cpu:
    cpu: int  # logical CPU id (what sched_setaffinity takes)
    package: int  # socket
    core: int  # physical core id within the package
    thread: int  # 0 for the first hardware thread of a core, 1.. for its SMT siblings


def parse_cpu_list(text: str) -> list[int]:
    """'0-3,8,10-11' -> [0, 1, 2, 3, 8, 10, 11]."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        cpus.extend(range(int(low), int(high or low) + 1))
    return cpus


def format_cpu_list(cpus) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def read_topology(sysfs_root: Path = SYSFS_ROOT, allowed: set[int] | None = None) -> list[Cpu]:
    """Online CPUs (restricted to `allowed`), with socket, core and SMT thread index."""
    cpu_dir = sysfs_root / "devices/system/cpu"
    online_file = cpu_dir / "online"
    online = parse_cpu_list(online_file.read_text()) if online_file.exists() else sorted(os.sched_getaffinity(0))
    seen_cores: dict[tuple[int, int], int] = {}
    cpus = []
    for cpu in sorted(online):
        if allowed is not None and cpu not in allowed:
            continue
        topo = cpu_dir / f"cpu{cpu}" / "topology"
        package = _read_int(topo / "physical_package_id", 0)
        core = _read_int(topo / "core_id", cpu)
        thread = seen_cores.get((package, core), 0)
        seen_cores[(package, core)] = thread + 1
        cpus.append(Cpu(cpu, package, core, thread))
    return cpus


def _read_int(path: Path, default: int) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return default


def order_cpus(cpus: list[Cpu], policy: str) -> list[int]:
    """All CPUs in the order a policy hands them out."""
    if policy == "spread":
        packages = sorted({c.package for c in cpus})
        ranked = []
        for c in cpus:
            same_package = [x for x in cpus if x.package == c.package and x.thread == c.thread]
            ranked.append((c.thread, same_package.index(c), packages.index(c.package), c.cpu))
        return [r[-1] for r in sorted(ranked)]
    # compact (and none: the order does not matter there)
    return [c.cpu for c in sorted(cpus, key=lambda c: (c.thread, c.package, c.core, c.cpu))]


def select_cpus(
    count: int, policy: str, sysfs_root: Path = SYSFS_ROOT, allowed: set[int] | None = None, smt: str = "cores"
) -> list[int]:
    """`count` CPUs in the policy's order. smt=cores (sorted ids): physical cores first, siblings only after every
    core is taken. smt=siblings: count/2 physical cores with two SMT siblings each, listed pair by pair so that
    OpenMP places built in this order put neighbouring threads on one core."""
    cpus = read_topology(sysfs_root, allowed if allowed is not None else set(os.sched_getaffinity(0)))
    if smt == "siblings":
        return _sibling_pairs(count, policy, cpus, threads_per_core(read_topology(sysfs_root)))
    if count > len(cpus):
        raise ValueError(f"{count} cores asked for, {len(cpus)} available")
    return sorted(order_cpus(cpus, policy)[:count])


def threads_per_core(cpus: list[Cpu]) -> int:
    """Hardware threads per physical core (1: no SMT)."""
    return 1 + max((c.thread for c in cpus), default=0)


def _sibling_pairs(count: int, policy: str, cpus: list[Cpu], node_threads_per_core: int) -> list[int]:
    if node_threads_per_core < 2:
        raise ValueError(f"smt='siblings' needs SMT: this node has {node_threads_per_core} thread per core")
    if count % 2:
        raise ValueError(f"smt='siblings' puts threads on sibling pairs: it needs an even count of CPUs, not {count}")
    cores: dict[tuple[int, int], list[Cpu]] = {}
    for c in cpus:
        cores.setdefault((c.package, c.core), []).append(c)
    pairs = {members[0].cpu: members[:2] for members in cores.values() if len(members) >= 2}
    if count // 2 > len(pairs):
        raise ValueError(
            f"smt='siblings': {count} CPUs need {count // 2} physical cores with two free siblings each; "
            f"this trial's CPUs have {len(pairs)}"
        )
    leaders = [c for c in cpus if c.cpu in pairs]  # each core's first allowed thread: thread 0
    return [sibling.cpu for leader in order_cpus(leaders, policy)[: count // 2] for sibling in pairs[leader]]


def physical_cores(cpus, sysfs_root: Path = SYSFS_ROOT) -> int:
    """Distinct physical cores (socket, core id) under a set of CPUs."""
    return len({(c.package, c.core) for c in read_topology(sysfs_root, set(cpus))})
