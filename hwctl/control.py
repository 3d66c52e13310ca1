"""Frequency, governor and turbo control through the cpufreq sysfs, one small class per knob.

Each knob works over a `sysfs_root` (tests use a simulated tree), says whether it is available and
why not, reads its state, and sets a value. Every write goes through `write_sysfs`, which refuses
any path but the known cpufreq/boost files. Setting is done by `HardwareSettings` (journal.py),
which records the original values before the first write and restores them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from hwctl.cores import SYSFS_ROOT

CPU_DIR = "devices/system/cpu"
WRITABLE = re.compile(
    r"^devices/system/cpu/(cpufreq/policy\d+/(scaling_governor|scaling_min_freq|scaling_max_freq)"
    r"|intel_pstate/no_turbo|cpufreq/boost)$"
)


class ControlUnavailable(RuntimeError):
    """The knob cannot be set on this machine (no cpufreq, not root, value out of range)."""


def write_sysfs(sysfs_root: Path, relative: str, value: str) -> None:
    if not WRITABLE.match(relative):
        raise PermissionError(f"refusing to write {relative}: not a known cpufreq/boost file")
    with open(sysfs_root / relative, "w") as f:
        f.write(value)


def read_sysfs(sysfs_root: Path, relative: str) -> str | None:
    try:
        return (sysfs_root / relative).read_text().strip()
    except OSError:
        return None


def policies(sysfs_root: Path = SYSFS_ROOT) -> list[str]:
    """Relative paths of the cpufreq policy folders, e.g. devices/system/cpu/cpufreq/policy0."""
    folder = sysfs_root / CPU_DIR / "cpufreq"
    found = sorted(folder.glob("policy*"), key=lambda p: int(p.name[6:]) if p.name[6:].isdigit() else -1)
    return [str(p.relative_to(sysfs_root)) for p in found if p.name[6:].isdigit()]


class Knob:
    name = ""

    def __init__(self, sysfs_root: Path = SYSFS_ROOT):
        self.sysfs_root = Path(sysfs_root)

    def files(self) -> list[str]:
        """The sysfs files (relative) this knob writes."""
        raise NotImplementedError

    def unavailable_reason(self) -> str | None:
        files = self.files()
        if not files:
            return f"{self.name}: no cpufreq policy in {self.sysfs_root / CPU_DIR / 'cpufreq'}"
        for relative in files:
            if read_sysfs(self.sysfs_root, relative) is None:
                return f"{self.name}: {self.sysfs_root / relative} is not readable"
            if not os.access(self.sysfs_root / relative, os.W_OK):
                return f"{self.name}: {self.sysfs_root / relative} is not writable (run as root)"
        return None

    def read(self) -> dict[str, str]:
        return {relative: read_sysfs(self.sysfs_root, relative) for relative in self.files()}

    def writes_for(self, value) -> list[tuple[str, str]]:
        """The (file, value) writes that set this knob, in a safe order; raises ControlUnavailable."""
        raise NotImplementedError


class Governor(Knob):
    name = "governor"

    def files(self) -> list[str]:
        return [f"{p}/scaling_governor" for p in policies(self.sysfs_root)]

    def available_values(self) -> list[str]:
        first = policies(self.sysfs_root)[:1]
        text = read_sysfs(self.sysfs_root, f"{first[0]}/scaling_available_governors") if first else None
        return text.split() if text else []

    def writes_for(self, value: str) -> list[tuple[str, str]]:
        reason = self.unavailable_reason()
        if reason:
            raise ControlUnavailable(reason)
        allowed = self.available_values()
        if allowed and value not in allowed:
            raise ControlUnavailable(f"governor={value!r} is not offered here ({', '.join(allowed)})")
        return [(f, value) for f in self.files()]


class Frequency(Knob):
    """Pins every policy's scaling_min_freq = scaling_max_freq = the asked frequency."""

    name = "freq_ghz"

    def files(self) -> list[str]:
        return [f"{p}/{n}" for p in policies(self.sysfs_root) for n in ("scaling_min_freq", "scaling_max_freq")]

    def limits_khz(self) -> tuple[int, int] | None:
        first = policies(self.sysfs_root)[:1]
        if not first:
            return None
        low = read_sysfs(self.sysfs_root, f"{first[0]}/cpuinfo_min_freq")
        high = read_sysfs(self.sysfs_root, f"{first[0]}/cpuinfo_max_freq")
        return (int(low), int(high)) if low and high else None

    def writes_for(self, value: float) -> list[tuple[str, str]]:
        reason = self.unavailable_reason()
        limits = self.limits_khz()
        if reason or limits is None:
            raise ControlUnavailable(reason or f"{self.name}: cpuinfo_min_freq/cpuinfo_max_freq not readable")
        khz = int(round(value * 1e6))
        if not limits[0] <= khz <= limits[1]:
            raise ControlUnavailable(f"freq_ghz={value} is outside {limits[0] / 1e6:.2f}..{limits[1] / 1e6:.2f} GHz")
        writes = []
        for p in policies(self.sysfs_root):
            current_max = int(read_sysfs(self.sysfs_root, f"{p}/scaling_max_freq") or 0)
            # the kernel refuses min > max: raise max first when going up, lower min first when going down
            order = (
                ("scaling_max_freq", "scaling_min_freq")
                if khz > current_max
                else ("scaling_min_freq", "scaling_max_freq")
            )
            writes += [(f"{p}/{name}", str(khz)) for name in order]
        return writes

    def steps_ghz(self, step_ghz: float = 0.4) -> list[float]:
        """min..max in steps of ~step_ghz, both ends included (the spec's frequency axis)."""
        limits = self.limits_khz()
        if limits is None:
            return []
        low, high = limits[0] / 1e6, limits[1] / 1e6
        count = max(1, round((high - low) / step_ghz))
        return sorted({round(low + (high - low) * i / count, 2) for i in range(count + 1)})


class Turbo(Knob):
    """intel_pstate's no_turbo (1 = turbo off) or the generic cpufreq boost (1 = on)."""

    name = "turbo"

    def _file(self) -> tuple[str, bool] | None:
        for relative, inverted in ((f"{CPU_DIR}/intel_pstate/no_turbo", True), (f"{CPU_DIR}/cpufreq/boost", False)):
            if (self.sysfs_root / relative).exists():
                return relative, inverted
        return None

    def files(self) -> list[str]:
        found = self._file()
        return [found[0]] if found else []

    def unavailable_reason(self) -> str | None:
        if self._file() is None:
            return f"turbo: neither intel_pstate/no_turbo nor cpufreq/boost in {self.sysfs_root / CPU_DIR}"
        return super().unavailable_reason()

    def is_on(self) -> bool | None:
        found = self._file()
        text = read_sysfs(self.sysfs_root, found[0]) if found else None
        if text is None:
            return None
        return (text == "0") if found[1] else (text == "1")

    def writes_for(self, value: bool) -> list[tuple[str, str]]:
        reason = self.unavailable_reason()
        if reason:
            raise ControlUnavailable(reason)
        relative, inverted = self._file()
        return [(relative, "0" if value == inverted else "1")]


def knobs(sysfs_root: Path = SYSFS_ROOT) -> dict[str, Knob]:
    return {k.name: k for k in (Frequency(sysfs_root), Governor(sysfs_root), Turbo(sysfs_root))}


def control_unavailable_reason(setting: str, value, sysfs_root: Path = SYSFS_ROOT) -> str | None:
    """Why `setting=value` cannot be applied here, or None (what plan validation asks)."""
    try:
        knobs(sysfs_root)[setting].writes_for(value)
    except ControlUnavailable as exc:
        return str(exc)
    return None
