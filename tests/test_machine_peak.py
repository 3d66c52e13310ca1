"""The machine's best measured matmul across libraries, the two efficiencies a row carries beside its mfu, and the
report's section that sets each framework's matmul against the machine's best. Numbers are asserted against the
row's own figures or against rows written here, never against the CPU the test runs on."""

from __future__ import annotations

import pytest

from hwctl.machine_efficiency import efficiencies
from hwctl.machine_peak import best_of
from hwctl.matmul_libraries import LIBRARIES, measure_library
from hwctl.theoretical_peak import host_theoretical_peak, physical_cores_of
from sweep.results.efficiency import efficiency_section
from tests.conftest import CPUINFO_FIXTURES
from trainables.config import build_config
from trainables.launcher import run_trial


def test_best_of_keeps_the_fastest_and_says_what_was_skipped():
    results = [
        {"library": "torch.mm", "gflops": 200.0, "method": "torch.mm m", "undisturbed": True},
        {"library": "onednn", "gflops": 450.0, "method": "onednn m", "undisturbed": True},
        {"library": "numpy", "gflops": None, "skipped": "NumPy has no bf16 matmul"},
        {"library": "jax", "gflops": None, "skipped": "jax is not installed"},
    ]
    best = best_of(results)
    assert best["machine_peak_gflops"] == 450.0 and best["machine_peak_library"] == "onednn"
    method = best["machine_peak_method"]
    assert "torch.mm 200.0; onednn 450.0" in method and "(best: onednn m)" in method
    assert "numpy skipped: NumPy has no bf16 matmul" in method and "jax skipped: jax is not installed" in method
    assert best_of(results[2:])["machine_peak_gflops"] is None


def test_numpy_has_no_bf16_and_its_fp32_passes_the_ieee_check():
    assert measure_library("numpy", "bfloat16", 1) == {
        "library": "numpy",
        "gflops": None,
        "skipped": "NumPy has no bf16 matmul",
    }
    fp32 = measure_library("numpy", "float32", 1)
    assert fp32["gflops"] > 0 and fp32["method"].startswith(LIBRARIES["numpy"][1])


def test_efficiencies_divide_achieved_by_each_peak():
    assert efficiencies(50.0, 200.0, 400.0) == {
        "efficiency_vs_machine_peak": 0.25,
        "efficiency_vs_theoretical_peak": 0.125,
    }
    assert efficiencies(50.0, None, None) == {
        "efficiency_vs_machine_peak": None,
        "efficiency_vs_theoretical_peak": None,
    }


def test_an_ok_row_carries_both_efficiencies(tiny, data_dir, tmp_path, monkeypatch):
    # as if on a Zen 5 (hwctl reads the fixture; the worker inherits it): the theoretical figure is the fixture's
    monkeypatch.setenv("BENCH_CPUINFO", str(CPUINFO_FIXTURES["zen5-avx512"]))
    row = run_trial(build_config(tiny | {"framework": "numpy", "threads": 1}), data_dir=data_dir, output_dir=tmp_path)
    assert row["status"] == "ok", row.get("error")
    assert row["efficiency_vs_machine_peak"] == pytest.approx(row["achieved_gflops"] / row["machine_peak_gflops"])
    assert row["efficiency_vs_theoretical_peak"] == pytest.approx(
        row["achieved_gflops"] / row["theoretical_peak_gflops"]
    )
    assert row["mfu"] == pytest.approx(row["achieved_gflops"] / row["peak_gflops"])  # today's, unchanged
    per_core = host_theoretical_peak()["fp32_gflops_per_core"]
    cpus = [int(c) for c in row["affinity_read_back"].split(",")]
    assert row["theoretical_peak_gflops"] == pytest.approx(per_core * min(1, physical_cores_of(cpus)))
    assert "Zen 5" in row["theoretical_peak_method"]
    assert row["machine_peak_library"] in LIBRARIES
    assert all(library in row["machine_peak_method"] for library in LIBRARIES)  # measured, or why not


def report_row(framework, blas, peak, machine, achieved, node="h1", **extra):
    return {
        "status": "ok",
        "host": node,
        "threads": 2,
        "peak_dtype": "fp32",
        "framework": framework,
        "blas": blas,
        "peak_gflops": peak,
        "matmul_library": f"{framework} lib",
        "machine_peak_gflops": machine,
        "machine_peak_library": "onednn",
        "theoretical_peak_gflops": 500.0,
        "achieved_gflops": achieved,
        "mfu": achieved / peak,
        "efficiency_vs_machine_peak": achieved / machine if machine else None,
        "efficiency_vs_theoretical_peak": achieved / 500.0,
    } | extra


def test_the_report_section_sets_each_framework_against_the_machines_best():
    rows = [
        report_row("torch", "mkl", 200.0, 400.0, 100.0),
        report_row("torch", "mkl", 200.0, 400.0, 120.0),
        report_row("jax", "eigen", 400.0, 400.0, 160.0),
        report_row("torch", "mkl", 200.0, 400.0, 100.0, status="failed"),  # not ok: left out
        report_row("numpy", None, 150.0, None, 50.0),  # no machine peak (an older row): left out
    ]
    text = efficiency_section(rows)
    assert text.startswith("## Against the machine's limit") and "### h1" in text
    lines = text.splitlines()
    torch_line = next(line for line in lines if line.startswith("| torch (blas=mkl)"))
    # its matmul 200 of the machine's 400: 50%; mfu median 55% (100/200, 120/200), vs machine 27.5%, theory 22%
    assert torch_line == (
        "| torch (blas=mkl) | 2 | fp32 | 200.0 (torch lib) | 400.0 (onednn) | 50.0% | 500.0 | 55.0% | 27.5% | 22.0% | 2 |"
    )
    jax_line = next(line for line in lines if line.startswith("| jax (blas=eigen)"))
    assert "| 100.0% |" in jax_line and "| 40.0% | 40.0% | 32.0% | 1 |" in jax_line
    assert not any(line.startswith("| numpy") for line in lines)
    assert "No ok row carries" in efficiency_section(rows[3:])
