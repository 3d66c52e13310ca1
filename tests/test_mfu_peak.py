"""Which peak MFU divides by: bf16's for bf16 and mixed rows where the CPU does bf16 natively under the trial's ISA
cap, fp32's otherwise; decided from the CPU's flags, simulated here, never assumed from the machine running the test."""

from __future__ import annotations

from pathlib import Path

import pytest

from hwctl.isa import bf16_native_reason
from tests.conftest import CPUINFO_FIXTURES
from trainables.config import build_config
from trainables.torch_backend import trainer as torch_trainable
from trainables.torch_backend.trainer import TorchTrainer
from trainables.worker import derived_metrics

SAPPHIRE_RAPIDS = {"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16", "amx_tile", "amx_bf16"}
ICE_LAKE = {"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni"}
ARROW_LAKE = {"avx2", "fma", "avx_vnni", "avx_ne_convert"}


def test_native_bf16_needs_the_flags_and_an_isa_cap_that_allows_them():
    assert bf16_native_reason(None, SAPPHIRE_RAPIDS) is None
    assert bf16_native_reason(None, ARROW_LAKE) is None
    assert bf16_native_reason(None, ICE_LAKE) == (
        "the CPU has none of avx512_bf16, amx_bf16, avx_ne_convert (cpuinfo flags)"
    )
    assert bf16_native_reason("amx", SAPPHIRE_RAPIDS) is None
    assert bf16_native_reason("avx512_bf16", SAPPHIRE_RAPIDS) is None
    assert bf16_native_reason("avx512", SAPPHIRE_RAPIDS) == (
        "isa=avx512 caps oneDNN at AVX512_CORE, below its bf16 instructions"
    )
    assert bf16_native_reason("avx2", SAPPHIRE_RAPIDS).startswith("isa=avx2 caps oneDNN at AVX2")


@pytest.fixture
def fake_peaks(monkeypatch) -> list:
    """matmul_peak_gflops replaced: fp32 100 GFLOP/s, bf16 400, both cached."""
    asked = []

    def peak(threads, cache_dir, dtype_name="float32", fingerprint_id=None):
        asked.append(dtype_name)
        value = {"float32": 100.0, "bfloat16": 400.0}[dtype_name]
        return {"peak_gflops": value, "peak_cached": True, "peak_method": f"best GFLOP/s of torch.mm {dtype_name}"}

    monkeypatch.setattr(torch_trainable, "matmul_peak_gflops", peak)
    monkeypatch.setattr(torch_trainable, "matmul_library", lambda dtype_name, *args: f"library for {dtype_name}")
    return asked


@pytest.mark.parametrize(
    ("cpu", "precision", "isa", "expected"),
    [
        ("zen5-avx512", "fp32", None, (100.0, "fp32")),
        ("zen5-avx512", "bf16", None, (400.0, "bf16")),
        ("zen5-avx512", "mixed", None, (400.0, "bf16")),
        ("zen5-avx512", "bf16", "avx512", (100.0, "fp32")),  # the cap takes bf16 away from oneDNN
        ("zen3-avx2", "fp32", None, (100.0, "fp32")),
        ("zen3-avx2", "bf16", None, (100.0, "fp32")),
        ("zen3-avx2", "mixed", None, (100.0, "fp32")),
    ],
)
def test_the_peak_follows_precision_and_native_bf16(tiny, monkeypatch, fake_peaks, cpu, precision, isa, expected):
    monkeypatch.setenv("BENCH_CPUINFO", str(CPUINFO_FIXTURES[cpu]))
    cfg = build_config(tiny | {"precision": precision} | ({"isa": isa} if isa else {}))
    peak = TorchTrainer(cfg).matmul_peak(1, Path("unused: the peaks are fakes"))
    assert (peak["peak_gflops"], peak["peak_dtype"], peak["peak_gflops_fp32"]) == (*expected, 100.0)
    assert fake_peaks == (["float32", "bfloat16"] if expected[1] == "bf16" else ["float32"])
    # the library is probed in the dtype the matmuls run in, native bf16 or not
    assert peak["matmul_library"] == f"library for {'float32' if precision == 'fp32' else 'bfloat16'}"
    if precision != "fp32" and expected[1] == "fp32":  # says why a bf16 row is divided by the fp32 peak
        assert peak["peak_method"].startswith("fp32 peak, as bf16 is not native here (")
        assert peak["peak_method"].endswith("): best GFLOP/s of torch.mm float32")


def test_mfu_divides_by_the_peak_used(tiny, monkeypatch):
    monkeypatch.setenv("BENCH_CPUINFO", str(CPUINFO_FIXTURES["zen5-avx512"]))
    cfg = build_config(tiny | {"precision": "bf16"})
    timing = {"step_time_median_s": 0.01, "energy_j": None, "measure_steps_run": 3, "time_to_first_step_s": 0.5}
    peak = {
        "peak_gflops": 400.0,
        "peak_dtype": "bf16",
        "peak_gflops_fp32": 100.0,
        "peak_method": "m",
        "peak_cached": True,
    }
    row = derived_metrics(cfg, timing, 1000, peak)
    assert row["achieved_gflops"] == row["flops_per_step"] / 0.01 / 1e9
    assert row["mfu"] == row["achieved_gflops"] / 400.0
    assert (row["peak_gflops"], row["peak_dtype"], row["peak_gflops_fp32"], row["bf16_native"]) == (
        400.0,
        "bf16",
        100.0,
        True,
    )
    # a trainer that only measures fp32 (tests/fake_framework/trainer.py): divided by that, and said so
    fp32_only = {"peak_gflops_fp32": 80.0, "peak_method": "np.matmul", "peak_cached": False}
    row = derived_metrics(cfg, timing, 1000, fp32_only)
    assert (row["mfu"], row["peak_dtype"]) == (row["achieved_gflops"] / 80.0, "fp32")
    monkeypatch.setenv("BENCH_CPUINFO", str(CPUINFO_FIXTURES["zen3-avx2"]))
    assert derived_metrics(cfg, timing, 1000, peak)["bf16_native"] is False
