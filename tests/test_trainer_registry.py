"""Frameworks plug in through the trainer registry; a fused-step trainer runs through the real worker, without torch."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, TINY
from tests.fake_trainer import FakeTrainer
from trainables.columns import unknown_columns
from trainables.config import ConfigError, build_config
from trainables.timing import PHASES_FUSED, measure
from trainables.trainer import framework_names, load_trainer, parse_trainers

FAKE = "fake=tests.fake_trainer:FakeTrainer"


def python(code: str, **env) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=os.environ | env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_registry_lists_the_three_frameworks():
    assert framework_names()[:3] == ("torch", "jax", "numpy")
    assert load_trainer("torch").NAME == "torch"
    with pytest.raises(ConfigError, match="unknown framework 'mxnet' \\(torch, jax, numpy"):
        build_config({"framework": "mxnet"})
    with pytest.raises(ValueError, match="framework='mxnet' has no trainer \\(registered: torch, jax, numpy"):
        load_trainer("mxnet")


def test_bench_trainers_is_parsed_into_names_and_targets():
    assert parse_trainers(f" {FAKE} , b=pkg.mod:B,") == {"fake": "tests.fake_trainer:FakeTrainer", "b": "pkg.mod:B"}
    assert parse_trainers("") == {}
    with pytest.raises(ValueError, match="BENCH_TRAINERS: 'fake=tests.fake_trainer' is not name=module:Class"):
        parse_trainers("fake=tests.fake_trainer")


def test_a_registered_framework_is_a_choice_and_leaves_not_supported_yet():
    code = (
        "from trainables.config import CHOICES, NOT_SUPPORTED_YET; "
        "print(CHOICES['framework'], NOT_SUPPORTED_YET['framework'])"
    )
    assert python(code) == "('torch', 'jax', 'numpy') ()"
    assert python(code, BENCH_TRAINERS=FAKE) == "('torch', 'jax', 'numpy', 'fake') ()"


def test_importing_the_config_and_registry_does_not_import_torch():
    code = "import sys, trainables.config, trainables.trainer, trainables.timing; print('torch' in sys.modules)"
    assert python(code, BENCH_TRAINERS=FAKE) == "False"


def test_fake_trainer_learns_and_reports_no_phase_split(tokens, tiny):
    cfg = build_config(tiny | {"learning_rate": 1e-2, "grad_accum": 2})
    trainer = FakeTrainer(cfg)
    result = measure(
        trainer, trainer.make_batches(tokens, 62), grad_accum=2, warmup_steps=0, measure_steps=30, measure_seconds=0
    )
    assert result["loss_first"] == pytest.approx(6.24, abs=0.01)  # ln(512): near-zero logits guess uniformly
    assert result["loss_last"] < result["loss_first"] - 0.7
    assert [result[k] for k in ("forward_s", "forward_std_s", "backward_s", "optimizer_s")] == [None] * 4
    assert result["phase_split"] == PHASES_FUSED
    assert result["timing_method"].startswith("time.perf_counter around each fused training step")
    assert len(result["step_times_s"]) == 30 and result["step_time_median_s"] > 0


def test_a_fused_framework_runs_through_the_real_worker_without_torch():
    assignments = [f"{k}={v}" for k, v in (TINY | {"learning_rate": 0.01}).items()]
    done = subprocess.run(
        [sys.executable, "bench.py", "trial", "framework=fake", *assignments, "--json"],
        cwd=REPO_ROOT,
        env=os.environ | {"BENCH_TRAINERS": FAKE, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)
    # FakeTrainer.facts() fails the trial if torch was loaded in the worker, so "ok" also means: no torch
    assert (row["status"], row["error"], row["framework"]) == ("ok", None, "fake")
    assert "torch_version" not in row and "torch_threads" not in row
    assert row["loss_last"] < row["loss_first"]
    assert [row[k] for k in ("forward_s", "backward_s", "optimizer_s")] == [None, None, None]
    assert row["phase_split"] == PHASES_FUSED
    assert row["step_time_median_s"] > 0 and row["measure_steps_run"] == 3
    assert row["mfu"] == pytest.approx(row["achieved_gflops"] / row["peak_gflops_fp32"]) and row["mfu"] > 0
    assert row["peak_method"].startswith("best GFLOP/s of np.matmul float32") and row["peak_cached"] is False
    assert row["params"] == 2 * 512 * 64  # the fake's own two tables, not the configured GPT
    assert row["blas_used"] in ("openblas", "mkl", "blis")
    assert row["thread_pools"]["openblas"] == row["threads"]  # read back in the worker
    assert json.loads(row["env"])["BENCH_TRAINERS"] == FAKE  # the row says which module the framework came from
    assert unknown_columns(row) == []
