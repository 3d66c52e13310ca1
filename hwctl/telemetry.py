"""What the machine did during the measured steps: effective frequency, CPU time others took, steal, and energy.

Each is a probe with start() and stop() -> dict, bracketing exactly the measured steps (trainables/timing.py);
`Probes` runs several over the same window. All read-only and cheap: a few files read at each end of the window,
nothing inside it. Missing sources (no cpufreq, no RAPL on this VM) give None and the reason, never an invented
number.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

from hwctl.cores import SYSFS_ROOT

PROC_ROOT = Path("/proc")
USER_HZ = os.sysconf("SC_CLK_TCK")  # the unit of /proc/stat and /proc/<pid>/stat times
FREQ_METHOD = (
    "mean of scaling_cur_freq of the trial's CPUs, read by the worker at the start and at the end of the measured "
    "steps: the frequency at the window's two edges, not a time average"
)
ENERGY_METHOD = "RAPL package energy_uj (all packages) read before and after the measured steps, wrap-corrected"
CONTENTION_METHOD = (
    "/proc/stat of the worker's CPUs over the measured steps: busy (user+nice+system+irq+softirq) − the worker's "
    f"utime+stime (/proc/self/stat, all threads), clamped at 0; steal column; resolution 1/{USER_HZ} s per CPU"
)
# columns of a /proc/stat cpuN line (after the name): user nice system idle iowait irq softirq steal guest guest_nice;
# guest time is already inside user, so it is not added again
BUSY_COLUMNS = (0, 1, 2, 5, 6)
STEAL_COLUMN = 7


class Probes:
    """Several probes bracketing one window: started in order, stopped in reverse (the last started is the innermost,
    so put the one whose own reads should disturb least last), their results merged."""

    def __init__(self, probes: list):
        self.probes = probes

    def start(self) -> None:
        for probe in self.probes:
            probe.start()

    def stop(self) -> dict:
        merged = {}
        for probe in reversed(self.probes):
            merged |= probe.stop()
        return merged


def cur_freq_khz(cpus: list[int], sysfs_root: Path = SYSFS_ROOT) -> list[int]:
    values = []
    for cpu in cpus:
        try:
            values.append(int((sysfs_root / f"devices/system/cpu/cpu{cpu}/cpufreq/scaling_cur_freq").read_text()))
        except (OSError, ValueError):
            continue
    return values


class FrequencyProbe:
    """scaling_cur_freq of the trial's CPUs at the two edges of the window, read by the worker itself. Cheaper and
    tighter than the parent sampling between markers: nothing runs inside the window, no parent wake-ups land on the
    trial's cores, and a window shorter than a poll still gets its two readings. The price: a dip in the middle of
    the window is missed (foreign_cpu_s shows the neighbours that usually cause one)."""

    def __init__(self, cpus: list[int], sysfs_root: Path = SYSFS_ROOT):
        self.cpus, self.sysfs_root, self._start = cpus, sysfs_root, []

    def start(self) -> None:
        self._start = cur_freq_khz(self.cpus, self.sysfs_root)

    def stop(self) -> dict:
        samples = self._start + cur_freq_khz(self.cpus, self.sysfs_root)
        if not samples:
            return {
                "effective_freq_ghz": None,
                "effective_freq_method": f"unavailable: no scaling_cur_freq under {self.sysfs_root}/devices/system/cpu",
            }
        return {"effective_freq_ghz": statistics.fmean(samples) / 1e6, "effective_freq_method": FREQ_METHOD}


def load_average() -> float:
    return os.getloadavg()[0]


def cpu_ticks(cpus: list[int], proc_root: Path = PROC_ROOT) -> tuple[int, int]:
    """(busy, steal) clock ticks summed over `cpus`, from proc_root/stat; ValueError naming a CPU it lacks."""
    lines = {}
    for line in (proc_root / "stat").read_text().splitlines():
        name, _, rest = line.partition(" ")
        if name.startswith("cpu") and name != "cpu":
            lines[int(name[3:])] = [int(v) for v in rest.split()]
    missing = sorted(set(cpus) - set(lines))
    if missing:
        raise ValueError(f"no cpu{missing[0]} line in {proc_root}/stat")
    busy = sum(lines[cpu][i] for cpu in cpus for i in BUSY_COLUMNS)
    steal = sum(lines[cpu][STEAL_COLUMN] for cpu in cpus)
    return busy, steal


def own_cpu_ticks(proc_root: Path = PROC_ROOT) -> int:
    """utime + stime of this process, every thread (the live and the exited ones), in clock ticks."""
    fields = (proc_root / "self/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5); fields[0] is field 3, the state


class CpuContention:
    """CPU time that others took on the trial's CPUs while the worker measured, and time the hypervisor stole.

    foreign_cpu_s = busy time of the trial's CPUs − the worker's own CPU time. It counts other processes (the parent,
    Ray, other users, the worker's own child processes) and kernel work (kernel threads, and interrupts unless they
    land on the worker and the kernel does not account IRQ time apart) on those CPUs.
    Subtracting all of the worker's CPU time is right because the worker can run nowhere else: `cpus` is its
    affinity mask (with pinning=none, every CPU the trial was allowed). steal_s is time the hypervisor ran other
    guests on those CPUs' vCPUs instead of this one."""

    def __init__(self, cpus: list[int], proc_root: Path = PROC_ROOT):
        self.cpus, self.proc_root = cpus, proc_root
        self._start: tuple[int, int, int] | None = None
        self._unavailable = "stop() before start()"

    def _read(self) -> tuple[int, int, int] | None:
        try:
            return *cpu_ticks(self.cpus, self.proc_root), own_cpu_ticks(self.proc_root)
        except (OSError, ValueError, IndexError) as exc:
            self._unavailable = str(exc)
            return None

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> dict:
        end = self._read() if self._start is not None else None
        if end is None:
            return {
                "foreign_cpu_s": None,
                "steal_s": None,
                "worker_cpu_s": None,
                "contention_method": f"unavailable: {self._unavailable}",
            }
        busy, steal, own = (e - s for e, s in zip(end, self._start, strict=True))
        # ticks sampled on each CPU and the process's own (precise, then rounded) time disagree by a tick or so
        return {
            "foreign_cpu_s": max(busy - own, 0) / USER_HZ,
            "steal_s": steal / USER_HZ,
            "worker_cpu_s": own / USER_HZ,
            "contention_method": CONTENTION_METHOD,
        }


def rapl_packages(sysfs_root: Path = SYSFS_ROOT) -> list[Path]:
    """Readable package-level RAPL domains (intel-rapl:N, not their sub-domains)."""
    found = []
    for domain in sorted((sysfs_root / "class/powercap").glob("intel-rapl:*")):
        if domain.name.count(":") == 1 and os.access(domain / "energy_uj", os.R_OK):
            found.append(domain)
    return found


class EnergyCounter:
    def __init__(self, sysfs_root: Path = SYSFS_ROOT):
        self.domains = rapl_packages(sysfs_root)
        self.sysfs_root = sysfs_root
        self._start: list[int] = []

    def _read(self) -> list[int]:
        return [int((d / "energy_uj").read_text()) for d in self.domains]

    def start(self) -> None:
        self._start = self._read() if self.domains else []

    def stop(self) -> dict:
        if not self.domains:
            return {
                "energy_j": None,
                "energy_method": f"unavailable: no readable RAPL domain in {self.sysfs_root}/class/powercap",
            }
        total = 0
        for domain, begin, end in zip(self.domains, self._start, self._read(), strict=True):
            if end < begin:  # the counter wrapped
                end += int((domain / "max_energy_range_uj").read_text())
            total += end - begin
        return {"energy_j": total / 1e6, "energy_method": ENERGY_METHOD}


def wait_until_quiet(
    cpus: list[int],
    *,
    busy_below: float = 0.10,
    window_s: float = 1.0,
    max_wait_s: float = 60.0,
    proc_root: Path = PROC_ROOT,
    sleep=None,
) -> tuple[float, float]:
    """Wait until the CPUs are busy less than `busy_below` of their time over one window (or `max_wait_s` passed);
    returns (seconds waited, the last window's busy fraction). Measured here: the first trials after a fresh
    `ray.init` had 2.0-3.8 s of foreign CPU time in their measured steps against 0.5 s later in the same sweep, while
    Ray's processes start up; a sweep waits for that to pass before its first trial."""
    sleep = sleep or time.sleep
    waited, busy_fraction = 0.0, 1.0
    before = cpu_ticks(cpus, proc_root)[0]
    while waited < max_wait_s:
        sleep(window_s)
        waited += window_s
        after = cpu_ticks(cpus, proc_root)[0]
        busy_fraction = (after - before) / USER_HZ / (window_s * len(cpus))
        if busy_fraction < busy_below:
            break
        before = after
    return waited, busy_fraction


def wait_until_own_cpus_quiet() -> tuple[float, float]:
    """wait_until_quiet over the CPUs this process may run on: run as a Ray task on a node, they are that node's."""
    return wait_until_quiet(sorted(os.sched_getaffinity(0)))
