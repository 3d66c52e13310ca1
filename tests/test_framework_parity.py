"""torch, jax and numpy train the same model on the same numbers, through the real worker (`bench.py trial`).

Gradient parity of every model axis is tested in-process (tests/test_jax_trainer.py, tests/test_numpy_trainer.py);
here the frameworks run as a user runs them: the same config's first loss agrees across the three rows, every thread
pool in the worker follows the trial's one core, and each row says which matmul backend ran, read back.
"""

from __future__ import annotations

import json

import pytest

from tests.bench_process import bench_trial
from tests.conftest import TINY
from trainables.columns import unknown_columns

# full attention, GQA and a local block: one config that crosses the model axes the frameworks implement apart
PARITY = TINY | {"heads": 4, "kv_heads": 2, "activation": "silu", "mlp_ratio": 3, "attn_backend": "manual"}
FRAMEWORKS = ("torch", "jax", "numpy")


def trial_row(*assignments: str) -> dict:
    done = bench_trial(*assignments)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def rows() -> dict[str, dict]:
    common = [f"{k}={v}" for k, v in (PARITY | {"cores": 1, "learning_rate": 0.01}).items()]
    return {framework: trial_row(f"framework={framework}", *common) for framework in FRAMEWORKS}


def test_every_framework_runs_in_the_real_worker_and_learns(rows):
    for framework, row in rows.items():
        assert (row["status"], row["error"], row["framework"]) == ("ok", None, framework)
        assert row["loss_last"] < row["loss_first"], framework
        assert unknown_columns(row) == []
    assert rows["torch"]["params"] == rows["jax"]["params"] == rows["numpy"]["params"]
    # the same FLOPs for the same manual attention, so MFU and tokens/s mean the same in all three
    assert rows["torch"]["flops_per_step"] == rows["jax"]["flops_per_step"] == rows["numpy"]["flops_per_step"]


def test_the_same_config_starts_from_the_same_loss_in_every_framework(rows):
    reference = rows["torch"]["loss_first"]
    for framework in ("jax", "numpy"):
        assert rows[framework]["loss_first"] == pytest.approx(reference, rel=1e-5), framework


def test_every_thread_pool_follows_the_trials_one_core(rows):
    for framework, row in rows.items():
        pools = row["thread_pools"]
        assert pools and all(count == 1 for count in pools.values()), (framework, pools)
    assert "openmp" in rows["torch"]["thread_pools"]  # torch's OpenMP pool (libgomp)
    assert rows["jax"]["thread_pools"]["xla_eigen"] == 1  # XLA's pool, counted from its threads' names
    assert rows["numpy"]["thread_pools"]["openblas"] == 1
    for framework in ("jax", "numpy"):  # no libgomp: the worker never loaded torch for them
        assert "openmp" not in rows[framework]["thread_pools"], framework


def test_each_row_records_the_backend_that_ran(rows):
    assert rows["torch"]["blas"] == "mkl" and rows["torch"]["blas_used"] == "mkl"
    assert rows["jax"]["blas"] == "eigen" and rows["jax"]["blas_used"] == "eigen"
    assert "--xla_cpu_experimental_ynn_fusion_type=" in rows["jax"]["xla_flags"]
    assert json.loads(rows["jax"]["env"])["XLA_FLAGS"] == rows["jax"]["xla_flags"]
    assert rows["numpy"]["blas"] == "openblas" and rows["numpy"]["blas_used"] == "openblas"
    for framework, row in rows.items():
        assert row["peak_gflops"] > 0 and row["mfu"] > 0, framework


def test_torch_onednn_bf16math_routes_fp32_linears_to_onednn_with_bf16_math():
    row = trial_row("blas=onednn-bf16math", *[f"{k}={v}" for k, v in (TINY | {"cores": 1}).items()])
    assert (row["status"], row["blas"], row["blas_used"]) == ("ok", "onednn-bf16math", "onednn")
    assert row["matmul_library"].startswith("onednn (")  # the kernel oneDNN's verbose output named
    assert row["onednn_math"].startswith("fpmath:bf16: onednn ")  # the numerics change its name says
