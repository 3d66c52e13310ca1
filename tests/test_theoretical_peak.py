"""The theoretical peak from simulated CPUs: cpuinfo texts (tests/fixtures, and an Intel part with AVX-512 and AMX
written here) over simulated sysfs trees (a temp dir passed as the root: nothing is patched). No figure depends on
the CPU the test runs on."""

from __future__ import annotations

from pathlib import Path

import pytest

from hwctl.fingerprint import host_fingerprint
from hwctl.theoretical_peak import physical_cores_of, theoretical_peak, trial_theoretical_peak
from tests.conftest import CPUINFO_FIXTURES
from tests.simsysfs import make_cpufreq_tree

# Sapphire Rapids (family 6 model 0x8f) as cpuinfo lists it, shortened to the fields the peak reads
SAPPHIRE_RAPIDS = """processor	: 0
vendor_id	: GenuineIntel
cpu family	: 6
model		: 143
model name	: Intel(R) Xeon(R) Platinum 8468 @ 2.10GHz
cpu MHz		: 800.000
flags		: fpu sse sse2 avx fma avx2 avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
"""
TIGER_LAKE = SAPPHIRE_RAPIDS.replace("143", "140").replace(" avx512_bf16 amx_bf16 amx_tile amx_int8", "")


def fixture_text(name: str) -> str:
    return CPUINFO_FIXTURES[name].read_text()


def topology(root: Path, cores: list[tuple[int, int]]) -> Path:
    """A sysfs tree whose cpu i sits on (package, core) = cores[i], without cpufreq."""
    cpu_dir = root / "devices/system/cpu"
    for i, (package, core) in enumerate(cores):
        (cpu_dir / f"cpu{i}/topology").mkdir(parents=True)
        (cpu_dir / f"cpu{i}/topology/physical_package_id").write_text(f"{package}\n")
        (cpu_dir / f"cpu{i}/topology/core_id").write_text(f"{core}\n")
    (cpu_dir / "online").write_text(f"0-{len(cores) - 1}\n")
    return root


def test_zen3_avx2_two_256_bit_fma_pipes_at_cpuinfo_clock(tmp_path):
    peak = theoretical_peak(fixture_text("zen3-avx2"), tmp_path)  # no cpufreq: cpuinfo's cpu MHz, 2445.404
    assert peak["clock_ghz"] == pytest.approx(2.445404)
    assert peak["clock_source"].startswith("cpuinfo cpu MHz")
    assert peak["fp32_gflops_per_core"] == pytest.approx(2 * 8 * 2 * 2.445404)  # 78.25
    assert peak["bf16_gflops_per_core"] is None  # no avx512_bf16: bf16 runs as fp32
    assert "Zen 3" in peak["method"] and "no native bf16" in peak["method"]


def test_zen5_avx512_full_width_at_cpufreq_max(tmp_path):
    sysfs = make_cpufreq_tree(tmp_path, cpus=2)  # cpuinfo_max_freq 3600000 kHz
    peak = theoretical_peak(fixture_text("zen5-avx512"), sysfs)
    assert peak["clock_ghz"] == pytest.approx(3.6) and peak["clock_source"].startswith("cpufreq")
    assert peak["fp32_gflops_per_core"] == pytest.approx(2 * 16 * 2 * 3.6)  # 230.4
    assert peak["bf16_gflops_per_core"] == pytest.approx(2 * 230.4)  # AVX512_BF16: two multiply-adds per lane
    assert "Zen 5" in peak["method"]


def test_zen4_double_pumps_avx512_on_256_bit_pipes(tmp_path):
    zen4 = (
        fixture_text("zen5-avx512")
        .replace("cpu family\t: 26", "cpu family\t: 25")
        .replace("model\t\t: 2", "model\t\t: 17")
    )
    peak = theoretical_peak(zen4, tmp_path)
    assert "Zen 4" in peak["method"]
    assert peak["fp32_gflops_per_core"] == pytest.approx(2 * 8 * 2 * 2.699998)


def test_intel_avx512_and_amx_at_the_model_name_clock(tmp_path):
    peak = theoretical_peak(SAPPHIRE_RAPIDS, tmp_path)  # no cpufreq: "@ 2.10GHz", not cpu MHz's idle 800
    assert peak["clock_ghz"] == pytest.approx(2.1) and peak["clock_source"].startswith("model name")
    assert peak["fp32_gflops_per_core"] == pytest.approx(2 * 16 * 2 * 2.1)  # 134.4
    assert peak["bf16_gflops_per_core"] == pytest.approx(1024 * 2.1)  # AMX tiles: 2150.4
    client = theoretical_peak(TIGER_LAKE, tmp_path)
    assert client["fp32_gflops_per_core"] == pytest.approx(1 * 16 * 2 * 2.1)  # one fused 512-bit FMA unit
    assert client["bf16_gflops_per_core"] is None


def test_an_unknown_cpu_has_no_figure_and_says_why(tmp_path):
    peak = theoretical_peak("vendor_id\t: SomeVendor\ncpu family\t: 7\nmodel\t\t: 1\ncpu MHz\t\t: 1000\n", tmp_path)
    assert peak["fp32_gflops_per_core"] is None and peak["bf16_gflops_per_core"] is None
    assert "no FMA table entry for SomeVendor family 0x7 model 0x1" in peak["method"]


def test_a_trial_counts_physical_cores_not_smt_siblings(tmp_path):
    sysfs = topology(tmp_path, [(0, 0), (0, 0), (0, 1), (0, 1)])  # cpus 0,1 and 2,3 are SMT siblings
    assert physical_cores_of([0, 1], sysfs) == 1 and physical_cores_of([0, 1, 2, 3], sysfs) == 2
    peak = theoretical_peak(SAPPHIRE_RAPIDS, sysfs)
    figure, method = trial_theoretical_peak(peak, "fp32", threads=2, cpus=[0, 1], sysfs_root=sysfs)
    assert figure == pytest.approx(134.4) and "x 1 physical cores" in method
    figure, _ = trial_theoretical_peak(peak, "bf16", threads=4, cpus=[0, 1, 2, 3], sysfs_root=sysfs)
    assert figure == pytest.approx(2 * 2150.4)
    figure, _ = trial_theoretical_peak(peak, "fp32", threads=1, cpus=[0, 1, 2, 3], sysfs_root=sysfs)
    assert figure == pytest.approx(134.4)  # one thread occupies one core


def test_the_fingerprint_carries_the_per_core_figures(tmp_path):
    cpuinfo = tmp_path / "proc/cpuinfo"
    cpuinfo.parent.mkdir()
    cpuinfo.write_text(SAPPHIRE_RAPIDS)
    sysfs = make_cpufreq_tree(tmp_path / "sys", cpus=2)
    row = host_fingerprint(sysfs, cpuinfo)
    assert row["hw_theoretical_fp32_gflops_per_core"] == pytest.approx(2 * 16 * 2 * 3.6)
    assert row["hw_theoretical_bf16_gflops_per_core"] == pytest.approx(1024 * 3.6)
    assert row["hw_theoretical_clock_ghz"] == pytest.approx(3.6)
    assert row["hw_theoretical_clock_source"].startswith("cpufreq cpuinfo_max_freq")
