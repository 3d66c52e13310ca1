"""Housekeeping CPUs: the CPUs of a node that Ray's own processes (GCS, raylet, dashboard, log monitor, the driver, the
trial's actor) are pinned to, and that no trial uses, so that their wake-ups stay off the measured cores.

`BENCH_HOUSEKEEPING_CPUS` (set by `bench.py run --housekeeping-cpus N`; Ray passes it to every node) says how many;
unset, a node with 4 CPUs or more sets one aside and a smaller one none (on 2 cores it would halve the trial). Each
node applies the same N to its own CPUs: the last physical cores of its CPUs, each taken whole where it has SMT
siblings (a sibling left to the trial would share its core with Ray's processes), so N=1 is one core's threads.

Once the driver has pinned a local Ray's processes there, every Ray worker the raylet starts inherits that pin: the
node's own CPUs then come from `BENCH_NODE_CPUS`, which the driver sets before it starts Ray (`remember_node_cpus`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from hwctl.cores import SYSFS_ROOT, format_cpu_list, parse_cpu_list, read_topology
from hwctl.telemetry import wait_until_quiet

HOUSEKEEPING_ENV = "BENCH_HOUSEKEEPING_CPUS"
NODE_CPUS_ENV = "BENCH_NODE_CPUS"
DEFAULT_FROM_CPUS = 4  # a node with this many CPUs or more sets one aside by default


def default_count(cpus: int) -> int:
    """Housekeeping CPUs a node of `cpus` CPUs sets aside when not told: 1 from 4 CPUs on, else 0."""
    return 1 if cpus >= DEFAULT_FROM_CPUS else 0


def check_count(count: int, cpus: int) -> None:
    """A ValueError naming the bad N and what is allowed: at least one CPU must be left to the trials."""
    if not 0 <= count < cpus:
        raise ValueError(
            f"--housekeeping-cpus {count}: must be 0 to {cpus - 1} (this node has {cpus} CPUs; a trial needs one)"
        )


def housekeeping_count(cpus: int) -> int:
    """N for a node of `cpus` CPUs: BENCH_HOUSEKEEPING_CPUS where it is set, else the default."""
    text = os.environ.get(HOUSEKEEPING_ENV, "").strip()
    if not text:
        return default_count(cpus)
    try:
        count = int(text)
    except ValueError:
        raise ValueError(f"{HOUSEKEEPING_ENV}={text!r}: must be an integer from 0 to {cpus - 1}") from None
    check_count(count, cpus)
    return count


def set_housekeeping_count(count: int | None, here: bool = True) -> int:
    """N for a sweep that starts now: `count` (--housekeeping-cpus; None: BENCH_HOUSEKEEPING_CPUS or this node's
    default), checked against this node's CPUs where the sweep's Ray starts `here` (on a cluster each node checks its
    own), and handed on through BENCH_HOUSEKEEPING_CPUS (Ray's workers inherit it; ray_session passes it to a
    cluster's)."""
    cpus = node_cpus()
    if count is None:
        return housekeeping_count(len(cpus))
    if count < 0:
        raise ValueError(f"--housekeeping-cpus {count}: must be 0 or more")
    if here:
        housekeeping_cpus(count, cpus)  # whole SMT cores must leave the trials a CPU too
    os.environ[HOUSEKEEPING_ENV] = str(count)
    return count


def housekeeping_cpus(count: int, allowed: Iterable[int], sysfs_root: Path = SYSFS_ROOT) -> list[int]:
    """The last physical cores of `allowed`, each with all of its allowed SMT siblings, until they hold at least
    `count` CPUs. A ValueError where that leaves no CPU to the trials."""
    allowed = set(allowed)
    check_count(count, len(allowed))
    if count == 0:
        return []
    cores: dict[tuple[int, int], list[int]] = {}
    for cpu in read_topology(sysfs_root, allowed):
        cores.setdefault((cpu.package, cpu.core), []).append(cpu.cpu)
    chosen: list[int] = []
    for core in sorted(cores, reverse=True):
        if len(chosen) >= count:
            break
        chosen += cores[core]
    if len(chosen) >= len(allowed):
        raise ValueError(
            f"--housekeeping-cpus {count}: whole cores with their SMT siblings take CPUs {format_cpu_list(chosen)}, "
            f"every CPU of this node ({format_cpu_list(allowed)}); a trial needs one"
        )
    return sorted(chosen)


def node_cpus() -> set[int]:
    """The CPUs this node gives the sweep: BENCH_NODE_CPUS where it is set, else this process's own."""
    text = os.environ.get(NODE_CPUS_ENV, "").strip()
    return set(parse_cpu_list(text)) if text else set(os.sched_getaffinity(0))


def remember_node_cpus() -> bool:
    """Keep this process's CPUs in BENCH_NODE_CPUS before it pins itself (or Ray's processes, which its later
    children inherit); True where this call set it, so that the caller can take it back."""
    if os.environ.get(NODE_CPUS_ENV, "").strip():
        return False
    os.environ[NODE_CPUS_ENV] = format_cpu_list(os.sched_getaffinity(0))
    return True


def split_node_cpus(sysfs_root: Path = SYSFS_ROOT) -> tuple[list[int], set[int]]:
    """(the housekeeping CPUs, the trials' CPUs) of this node."""
    node = node_cpus()
    housekeeping = housekeeping_cpus(housekeeping_count(len(node)), node, sysfs_root)
    return housekeeping, node - set(housekeeping)


def trial_cpus() -> set[int]:
    """The CPUs a trial on this node may use: the node's less its housekeeping CPUs ('all' cores in a plan)."""
    return split_node_cpus()[1]


def wait_until_trial_cpus_quiet() -> tuple[float, float]:
    """telemetry.wait_until_quiet over this node's trial CPUs (run as a Ray task on the node)."""
    return wait_until_quiet(sorted(trial_cpus()))


# ---- pinning ------------------------------------------------------------------------------------------------------
@dataclass
class Pinning:
    pinned: list[int] = field(default_factory=list)  # pids, every thread of each pinned
    failed: dict[int, str] = field(default_factory=dict)  # pid -> why not: "permission denied" or "gone"


def pin_processes(processes: Iterable[psutil.Process], cpus: Iterable[int]) -> Pinning:
    """Pin every thread of each process to `cpus`. Each thread, because on Linux sched_setaffinity(pid) moves only
    the thread whose id is pid; threads started later inherit the mask of the thread that starts them."""
    cpus, result = set(cpus), Pinning()
    for process in processes:
        try:
            moved = 0
            for thread in process.threads():
                with contextlib.suppress(ProcessLookupError):  # that thread ended meanwhile
                    os.sched_setaffinity(thread.id, cpus)
                    moved += 1
        except (psutil.NoSuchProcess, ProcessLookupError):
            result.failed[process.pid] = "gone"
        except (psutil.AccessDenied, PermissionError):
            result.failed[process.pid] = "permission denied"
        else:
            if moved:
                result.pinned.append(process.pid)
            else:
                result.failed[process.pid] = "gone"
    return result


@contextlib.contextmanager
def process_on_cpus(cpus: Iterable[int]) -> Iterator[None]:
    """Every thread of this process on `cpus` for the block, each back on its own CPUs after, and a thread started
    meanwhile (OpenMP's) on the caller's: a Ray task that measures the trial CPUs (the node's peaks) runs in a worker
    that inherited the housekeeping pin."""
    before = {}
    for thread in psutil.Process().threads():
        with contextlib.suppress(ProcessLookupError):
            before[thread.id] = os.sched_getaffinity(thread.id)
    callers = os.sched_getaffinity(0)
    pin_processes([psutil.Process()], cpus)
    try:
        yield
    finally:
        for thread in psutil.Process().threads():
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(thread.id, before.get(thread.id, callers))
