"""What the machine did during a trial: effective frequency, background load, and energy.

All read-only and cheap. Missing sources (no cpufreq, no RAPL on this VM) give None and the reason,
never an invented number.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

from hwctl.cores import SYSFS_ROOT

FREQ_METHOD = "mean of scaling_cur_freq samples of the trial's CPUs, taken by the parent every poll"
ENERGY_METHOD = "RAPL package energy_uj (all packages) read before and after the measured steps, wrap-corrected"


def cur_freq_khz(cpus: list[int], sysfs_root: Path = SYSFS_ROOT) -> list[int]:
    values = []
    for cpu in cpus:
        try:
            values.append(int((sysfs_root / f"devices/system/cpu/cpu{cpu}/cpufreq/scaling_cur_freq").read_text()))
        except (OSError, ValueError):
            continue
    return values


class FrequencySampler:
    def __init__(self, cpus: list[int], sysfs_root: Path = SYSFS_ROOT):
        self.cpus, self.sysfs_root, self.samples = cpus, sysfs_root, []

    def sample(self) -> None:
        self.samples.extend(cur_freq_khz(self.cpus, self.sysfs_root))

    def result(self) -> dict:
        if not self.samples:
            return {
                "effective_freq_ghz": None,
                "effective_freq_method": f"unavailable: no scaling_cur_freq under {self.sysfs_root}/devices/system/cpu",
            }
        return {"effective_freq_ghz": statistics.fmean(self.samples) / 1e6, "effective_freq_method": FREQ_METHOD}


def load_average() -> float:
    return os.getloadavg()[0]


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
