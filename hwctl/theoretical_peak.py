"""The CPU's theoretical matmul peak: FMA units x fp32 lanes per unit x 2 FLOPs per FMA x clock, per core and for a
trial's cores, from /proc/cpuinfo (vendor, family, model, ISA flags) and the clock sysfs or cpuinfo reports. Read
only, never measured (microbench.py measures): efficiency_vs_theoretical_peak divides by it.

Where each factor comes from (vendor manuals and the microarchitecture write-ups they are summarised in):
- AMD Zen 1 (family 0x17, models below 0x30; Hygon family 0x18): 2 FMA pipes of 128 bits: a 256-bit AVX2 FMA runs as
  two halves (AMD Software Optimization Guide for family 17h).
- AMD Zen 2 (family 0x17, models 0x30 on) and Zen 3 (family 0x19 without avx512f): 2 FMA pipes of 256 bits.
- AMD Zen 4 (family 0x19 with avx512f): AVX-512 executed on the same 2 x 256-bit FMA pipes, a 512-bit op in two
  passes ("double-pumped"), so no more FLOPs per cycle than Zen 3 (AMD Software Optimization Guide for family 19h).
- AMD Zen 5 (family 0x1a): 2 FMA pipes with a full 512-bit datapath (AMD, Hot Chips 2024), except the mobile parts
  (models 0x20-0x2f Strix Point, 0x60-0x6f Krackan Point), which keep 256-bit pipes and double-pump AVX-512.
- Intel with AVX-512 (Skylake-SP, Cascade Lake, Cooper Lake, Ice Lake-SP, Sapphire/Emerald/Granite Rapids): 2 FMA
  units of 512 bits (port 0+1 fused and port 5). Some Xeon Bronze/Silver SKUs of Skylake-SP and Cascade Lake have only
  the fused unit; cpuinfo does not tell them apart, so their figure here is twice the truth. Intel client parts with
  AVX-512 (Ice Lake, Tiger Lake, Rocket Lake: the models in INTEL_ONE_512_FMA) have the fused unit only.
- Intel without AVX-512, with AVX2 and FMA (Haswell to Alder/Raptor Lake P-cores): 2 FMA units of 256 bits.
- bf16: AVX512_BF16's VDPBF16PS does two bf16 multiply-adds per fp32 lane, so twice the fp32 rate on the same
  units. AMX_BF16 (Sapphire Rapids on): TDPBF16PS multiplies a 16x32 by a 32x16 bf16 tile (8192 multiply-adds) every
  16 cycles, 1024 FLOPs per cycle per core (Intel Optimization Reference Manual, AMX chapter). Without either flag a
  bf16 matmul converts and runs fp32 FMAs: no bf16 peak of its own (None, with the reason).

The clock (recorded, with its source, in every figure's method): sysfs cpufreq's cpuinfo_max_freq where the node has
cpufreq (the highest clock the driver reports, boost included), else the "@ x.xxGHz" of the model name (Intel's base
clock), else cpuinfo's "cpu MHz" (in a VM usually the host's nominal clock). Under AVX-512 or AMX load cores run
below their highest clock, and in a VM above the nominal one: the figure is the clock's, and a measured peak above it
says the clock is above the recorded one.
"""

from __future__ import annotations

import re
from pathlib import Path

from hwctl.cores import SYSFS_ROOT, read_topology
from hwctl.proc_sysfs import PROC_ROOT, cpuinfo_fields, cpuinfo_file, read_cpufreq

FLOPS_PER_FMA = 2
AMX_BF16_FLOPS_PER_CYCLE = 1024  # 16 x 16 x 32 bf16 multiply-adds x 2 FLOPs per TDPBF16PS, one per 16 cycles
INTEL_ONE_512_FMA = {0x7D, 0x7E, 0x8C, 0x8D, 0xA7}  # Ice Lake, Tiger Lake (client), Rocket Lake
ZEN5_256_BIT_MODELS = (range(0x20, 0x30), range(0x60, 0x70))  # Strix Point, Krackan Point


def vector_units(vendor: str, family: int, model: int, flags: set[str]) -> tuple[int, int, str] | None:
    """(FMA units per core, fp32 lanes per unit, the microarchitecture and the source of both), or None where this
    table does not know the CPU."""
    if vendor in ("AuthenticAMD", "HygonGenuine"):
        if family == 0x18 or (family == 0x17 and model < 0x30):
            return 2, 4, "AMD Zen 1: 2 FMA pipes x 128 bits (a 256-bit FMA in two halves)"
        if family == 0x17:
            return 2, 8, "AMD Zen 2: 2 FMA pipes x 256 bits"
        if family == 0x19 and "avx512f" not in flags:
            return 2, 8, "AMD Zen 3: 2 FMA pipes x 256 bits"
        if family == 0x19:
            return 2, 8, "AMD Zen 4: 2 FMA pipes x 256 bits, AVX-512 double-pumped on them"
        if family == 0x1A and any(model in r for r in ZEN5_256_BIT_MODELS):
            return 2, 8, "AMD Zen 5 mobile: 2 FMA pipes x 256 bits, AVX-512 double-pumped on them"
        if family == 0x1A:
            return 2, 16, "AMD Zen 5: 2 FMA pipes x 512 bits (full-width AVX-512)"
        return None
    if vendor == "GenuineIntel" and family == 6:
        if "avx512f" in flags and model in INTEL_ONE_512_FMA:
            return 1, 16, "Intel client AVX-512 (Ice/Tiger/Rocket Lake): 1 FMA unit x 512 bits (ports 0+1 fused)"
        if "avx512f" in flags:
            return 2, 16, "Intel AVX-512 server core: 2 FMA units x 512 bits (1 on some Xeon Bronze/Silver SKUs)"
        if {"avx2", "fma"} <= flags:
            return 2, 8, "Intel AVX2: 2 FMA units x 256 bits"
    return None


def clock_khz(fields: dict[str, str], sysfs_root: Path) -> tuple[int | None, str]:
    """(kHz, where it was read): cpufreq's highest clock, the model name's, or cpuinfo's cpu MHz."""
    cpufreq = read_cpufreq(sysfs_root)
    if cpufreq.get("max_khz"):
        return cpufreq["max_khz"], "cpufreq cpuinfo_max_freq (highest clock, boost included)"
    named = re.search(r"@\s*([\d.]+)\s*GHz", fields.get("model name", ""))
    if named:
        return round(float(named.group(1)) * 1e6), "model name (base clock)"
    try:
        return round(float(fields["cpu MHz"]) * 1000), "cpuinfo cpu MHz (no cpufreq in sysfs)"
    except (KeyError, ValueError):
        return None, "no clock: no cpufreq, no clock in the model name, no cpu MHz"


def theoretical_peak(cpuinfo_text: str, sysfs_root: Path = SYSFS_ROOT) -> dict:
    """Per-core fp32 and bf16 peaks (GFLOP/s) and how each factor was found; a figure is None with a reason where
    the CPU or its clock is unknown."""
    fields = cpuinfo_fields(cpuinfo_text)
    flags = set(fields.get("flags", "").split())
    vendor = fields.get("vendor_id", "")
    try:
        family, model = int(fields["cpu family"]), int(fields["model"])
    except (KeyError, ValueError):
        family = model = -1
    khz, clock_source = clock_khz(fields, sysfs_root)
    result = {
        "clock_ghz": khz / 1e6 if khz else None,
        "clock_source": clock_source,
        "fp32_gflops_per_core": None,
        "bf16_gflops_per_core": None,
    }
    units = vector_units(vendor, family, model, flags)
    if units is None or khz is None:
        what = f"{vendor or 'unknown vendor'} family {family:#x} model {model:#x}"
        result["method"] = "unknown clock" if units else f"no FMA table entry for {what}"
        return result
    fmas, lanes, uarch = units
    fp32_per_cycle = fmas * lanes * FLOPS_PER_FMA
    result["fp32_gflops_per_core"] = fp32_per_cycle * khz / 1e6
    method = f"{uarch}; {fmas} x {lanes} fp32 lanes x 2 FLOPs x {khz / 1e6:.3f} GHz ({clock_source})"
    if "amx_bf16" in flags:
        bf16_per_cycle, bf16 = AMX_BF16_FLOPS_PER_CYCLE, "AMX_BF16 tiles: 1024 FLOPs/cycle"
    elif "avx512_bf16" in flags:
        bf16_per_cycle, bf16 = 2 * fp32_per_cycle, "AVX512_BF16: 2 bf16 multiply-adds per fp32 lane"
    else:
        bf16_per_cycle, bf16 = None, "no native bf16 (neither avx512_bf16 nor amx_bf16): fp32 FMAs"
    if bf16_per_cycle:
        result["bf16_gflops_per_core"] = bf16_per_cycle * khz / 1e6
    result["method"] = f"{method}; bf16: {bf16}"
    return result


def host_theoretical_peak(sysfs_root: Path = SYSFS_ROOT, proc_root: Path = PROC_ROOT) -> dict:
    """theoretical_peak(...) of this node (or of the cpuinfo file BENCH_CPUINFO names: see proc_sysfs.py)."""
    try:
        text = cpuinfo_file(proc_root).read_text()
    except OSError:
        text = ""
    return theoretical_peak(text, sysfs_root)


def physical_cores_of(cpus: list[int], sysfs_root: Path = SYSFS_ROOT) -> int:
    """How many physical cores the logical CPUs `cpus` lie on: SMT siblings share their core's FMA units."""
    return len({(c.package, c.core) for c in read_topology(sysfs_root, allowed=set(cpus))}) or len(cpus)


def trial_theoretical_peak(
    peak: dict, dtype_label: str, threads: int, cpus: list[int], sysfs_root: Path = SYSFS_ROOT
) -> tuple[float | None, str]:
    """(GFLOP/s, method) of a trial on `threads` threads over `cpus`, in dtype_label ("fp32" or "bf16"): the per-core
    figure times the physical cores its threads can occupy."""
    per_core = peak[f"{dtype_label}_gflops_per_core"]
    cores = min(threads, physical_cores_of(cpus, sysfs_root))
    if per_core is None:
        return None, f"{dtype_label}: {peak['method']}"
    return per_core * cores, f"{dtype_label} x {cores} physical cores; {peak['method']}"
