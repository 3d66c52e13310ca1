"""blas=onednn-fp32: torch's GEMMs in oneDNN with strict fp32 math. Its gradients and 5-step losses against MKL's
(blas=mkl), what its verbose output shows, its refusals, and autotune searching it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hwctl.library_probe import onednn_math
from sweep.autotune import search_space
from tests.bench_process import bench_trial
from tests.conftest import REPO_ROOT, TINY
from trainables.config import ConfigError, build_config
from trainables.torch_backend.onednn_fp32 import OneDNNLinear, step_math
from trainables.torch_backend.trainer import TorchTrainer
from trainables.weights import sample_batches

pytestmark = pytest.mark.skipif(
    not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN: no oneDNN inner product to route to"
)

# model axes the GEMMs cross: GQA manual attention (5-D broadcast matmuls), local blocks, SDPA, a bias-free MLP
CONFIGS = {
    "sdpa": TINY,
    "manual-gqa-silu": TINY | {"heads": 4, "kv_heads": 2, "activation": "silu", "attn_backend": "manual"},
    "manual-local": TINY | {"attention": "local", "window": 16, "attn_backend": "manual", "mlp_ratio": 3},
}


@pytest.fixture(autouse=True)
def keep_fp32_precision():
    """The trainer sets torch's process-wide oneDNN fp32 math mode: put it back for the tests that follow."""
    before = torch.backends.mkldnn.matmul.fp32_precision
    yield
    torch.backends.mkldnn.matmul.fp32_precision = before


def trainer(values: dict, blas: str, **changes) -> TorchTrainer:
    return TorchTrainer(build_config(values | {"framework": "torch", "blas": blas} | changes))


def batches(cfg, count: int):
    return sample_batches(np.random.default_rng(1).integers(0, cfg.vocab_size, 4000), cfg, count)


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max |want|: one number per tensor, as tests/test_jax_trainer.py."""
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_gradients_match_mkl(name, torch_one_thread):
    mkl, onednn = trainer(CONFIGS[name], "mkl"), trainer(CONFIGS[name], "onednn-fp32")
    # every Linear routed, lm_head included (4 per block + 1), its weight still tied to the embedding
    assert sum(isinstance(m, OneDNNLinear) for m in onednn.model.modules()) == 4 * onednn.cfg.depth + 1
    assert onednn.model.lm_head.weight is onednn.model.wte.weight
    inputs, targets = batches(mkl.cfg, 1)[0]
    loss_mkl, grads_mkl = mkl.parameter_gradients(inputs, targets)
    loss_onednn, grads_onednn = onednn.parameter_gradients(inputs, targets)
    assert loss_onednn == pytest.approx(loss_mkl, rel=1e-5)
    assert grads_onednn.keys() == grads_mkl.keys()
    errors = {key: relative_error(grads_onednn[key], grads_mkl[key]) for key in grads_mkl}
    assert max(errors.values()) < 1e-4, errors


@pytest.mark.parametrize("name", ["sdpa", "manual-gqa-silu"])
def test_losses_after_five_adamw_steps_match_mkl(name, torch_one_thread):
    losses = {}
    for blas in ("mkl", "onednn-fp32"):
        run = trainer(CONFIGS[name], blas, learning_rate=0.01)
        losses[blas] = []
        # one batch five times: the loss must fall, so both runs must agree on what the steps did
        x, y = run.make_batches(np.random.default_rng(1).integers(0, run.cfg.vocab_size, 4000), 1)[0]
        for _ in range(5):
            loss = run.forward(x, y)
            run.backward(loss)
            run.optimizer_step()
            losses[blas].append(run.loss_value(run.detach(loss)))
    assert losses["onednn-fp32"][-1] < losses["onednn-fp32"][0]  # it trains
    np.testing.assert_allclose(losses["onednn-fp32"], losses["mkl"], rtol=0, atol=1e-3)


def test_a_training_step_runs_every_gemm_in_strict_fp32_onednn(torch_one_thread):
    manual = step_math(trainer(CONFIGS["manual-gqa-silu"], "onednn-fp32"))
    assert manual.startswith("strict: onednn ") and manual.endswith("; mkl 0"), manual  # attention's too
    assert "inner_product:" in manual
    # SDPA's CPU kernel calls ATen's per-tile GEMM, MKL's under strict math: not routed, and counted
    sdpa = step_math(trainer(CONFIGS["sdpa"], "onednn-fp32"))
    assert sdpa.startswith("strict: onednn "), sdpa
    if torch.backends.mkl.is_available():  # torch's BLAS, where its build has MKL
        assert not sdpa.endswith("; mkl 0"), sdpa


def test_onednn_math_reads_the_fpmath_mode_and_dtypes_of_verbose_lines():
    head = "onednn_verbose,v1,primitive,exec,cpu,inner_product,brg_matmul:avx512_core,forward_inference,"
    f32 = "src:f32::blocked:ab::f0 wei:f32::blocked:ab::f0 bia:undef::undef::: dst:f32::blocked:ab::f0"
    strict = f"{head}{f32},attr-scratchpad:user,,mb64ic64oc128,0.05"
    bf16_math = f"{head}{f32},attr-scratchpad:user attr-fpmath:bf16,,mb64ic64oc128,0.05"
    bf16_tensors = f"{head}{f32.replace('wei:f32', 'wei:bf16')},attr-scratchpad:user,,mb64ic64oc128,0.05"
    mkl = "MKL_VERBOSE SGEMM(T,N,256,64,64,...) 29.22us CNR:OFF Dyn:1 FastMM:1 TID:0  NThr:1"
    info = "onednn_verbose,v1,primitive,info,template:operation,engine,primitive,implementation"
    assert onednn_math([info, strict, strict, mkl]) == (
        "strict: onednn 2 (inner_product:brg_matmul:avx512_core x2); mkl 1"
    )
    assert onednn_math([strict, bf16_math]).startswith("fpmath:bf16: onednn 2 ")
    assert onednn_math([bf16_tensors]).startswith("dtype:bf16: onednn 1 ")
    assert onednn_math([strict.replace("attr-scratchpad:user", "attr-fpmath:strict")]).startswith("strict:")
    assert onednn_math([mkl, info]) == "none: onednn 0; mkl 1"


def _unsupported_reason_in_a_process(env: dict) -> str | None:
    """onednn_unsupported_reason in a fresh process: oneDNN reads its environment once, as it starts."""
    code = (
        "import json; from trainables.torch_backend.onednn_fp32 import onednn_unsupported_reason; "
        "print(json.dumps(onednn_unsupported_reason('onednn-fp32')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=os.environ | env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_refused_with_the_reason_where_onednn_would_not_compute_in_strict_fp32():
    # oneDNN's own default made bf16 under torch: what the verbose check is there to catch
    reason = _unsupported_reason_in_a_process({"ONEDNN_DEFAULT_FPMATH_MODE": "BF16"})
    assert reason is not None and reason.startswith(
        "blas='onednn-fp32' cannot run here: oneDNN did not run strict fp32"
    )
    assert "fpmath:bf16" in reason
    assert _unsupported_reason_in_a_process({"ONEDNN_DEFAULT_FPMATH_MODE": "STRICT"}) is None


def _real_cpu_has(flag: str) -> bool:
    return flag in Path("/proc/cpuinfo").read_text().split()  # oneDNN dispatches for the real CPU, not a fixture


@pytest.mark.skipif(not _real_cpu_has("avx2"), reason="this CPU has no AVX2 for the isa=avx2 cap")
def test_under_the_avx2_cap_onednn_still_runs_strict_fp32():
    assert _unsupported_reason_in_a_process({"ONEDNN_MAX_CPU_ISA": "AVX2"}) is None


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"precision": "bf16"}, "blas='onednn-fp32' runs fp32 GEMMs in oneDNN with strict fp32 math; precision='bf16'"),
        ({"precision": "q8"}, "precision='q8' has no fp32 GEMMs"),
        ({"fused_linear_act": True}, "blas='onednn-fp32' cannot run with fused_linear_act=True"),
        ({"blas": "onednn"}, "blas='onednn' cannot run with framework='torch' (it supports blas mkl, onednn-fp32"),
    ],
)
def test_validation_refuses_what_onednn_fp32_cannot_run(changes, message):
    with pytest.raises(ConfigError) as refused:
        build_config(TINY | {"framework": "torch", "blas": "onednn-fp32"} | changes)
    assert message in str(refused.value)


def test_autotune_searches_the_blas_values_that_keep_fp32_numerics():
    assert search_space(False, "torch", TINY)["blas"] == ["mkl", "onednn-fp32"]  # not onednn-bf16math
    assert "blas" not in search_space(False, "torch", TINY | {"precision": "bf16"})  # onednn-fp32 is fp32's only
    assert search_space(False, "jax", TINY | {"framework": "jax"})["blas"] == ["eigen", "onednn"]  # not ynnpack


def test_the_real_worker_records_strict_fp32_onednn():
    done = bench_trial(
        "blas=onednn-fp32", "attn_backend=manual", *[f"{k}={v}" for k, v in (TINY | {"cores": 1}).items()]
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    row = json.loads(done.stdout)
    assert (row["status"], row["blas"], row["blas_used"]) == ("ok", "onednn-fp32", "onednn")
    assert row["matmul_library"].startswith("onednn (")
    assert row["onednn_math"].startswith("strict: onednn ") and row["onednn_math"].endswith("; mkl 0")
    assert json.loads(row["env"])["ONEDNN_DEFAULT_FPMATH_MODE"] == "STRICT"
    assert row["peak_method"].startswith("best GFLOP/s of oneDNN's strict-fp32 inner product")  # mfu's own divisor
    assert row["loss_last"] < row["loss_first"]
