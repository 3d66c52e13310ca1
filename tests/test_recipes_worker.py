"""Each training-recipe value (README.md, "Training recipes") through the real worker (`bench.py trial`): it trains,
and the row records what was really built, read back from the objects; impossible combinations exit with a clear
message."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.bench_process import bench_trial
from tests.conftest import TINY

STEPS = {"warmup_steps": 1, "measure_steps": 20, "measure_seconds": 0, "cores": 1, "learning_rate": 0.01}
CASES = {
    "q8": {"precision": "q8"},
    "q4": {"precision": "q4"},
    "bitnet": {"precision": "bitnet"},
    "sgd": {"optimizer": "sgd", "learning_rate": 0.1},  # SGD's steps are lr x gradient: it needs ~10x AdamW's lr
    "lamb": {"optimizer": "lamb"},
    "lookahead": {"optimizer": "lookahead"},
    "freeze": {"freeze_layers": 1},
    "accum": {"grad_accum": 2},
    "fused": {"fused_linear_act": True, "activation": "relu"},
    "preset": {"model": "small", "depth": 1, "measure_steps": 5},
}


def trial_row(values: dict) -> dict:
    # keys given beside a preset override it: a preset case leaves out the tiny model's size
    base = {k: v for k, v in TINY.items() if k not in ("width", "heads", "depth")} if "model" in values else TINY
    done = bench_trial(*(f"{k}={v}" for k, v in (base | STEPS | values).items()))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def rows() -> dict[str, dict]:
    with ThreadPoolExecutor(2) as pool:  # one core each
        return dict(zip(CASES, pool.map(trial_row, CASES.values()), strict=True))


@pytest.mark.parametrize("case", [c for c in CASES if c != "preset"])
def test_each_value_trains_in_the_real_worker(rows, case):
    row = rows[case]
    assert (row["status"], row["error"]) == ("ok", None)
    assert row["loss_last"] < row["loss_first"] - 0.3, (case, row["loss_first"], row["loss_last"])


def test_quantised_rows_say_what_torchao_applied(rows):
    for precision in ("q8", "q4", "bitnet"):
        row = rows[precision]
        assert row["precision"] == precision and row["quantized_layers"] == 4 * TINY["depth"]
        assert row["torchao_version"] and row["quantization"], precision
        assert "kept fp32" in row["quantization"]
    assert rows["q4"]["quantized_modules"] == "FakeQuantizedLinear" and "int4 group 32" in rows["q4"]["quantization"]
    assert rows["q8"]["quantization_config"]["config"]["step"] == "prepare"
    assert "BitNetTrainingLinearWeight" in rows["bitnet"]["quantized_modules"]
    assert rows["sgd"].get("quantization") is None  # fp32 rows carry none


def test_optimizer_rows_name_the_class_and_settings_read_back(rows):
    assert rows["sgd"]["optimizer_class"] == "torch.optim.sgd.SGD"
    assert rows["sgd"]["optimizer_settings"]["momentum"] == 0.9
    assert rows["lamb"]["optimizer_class"].endswith("Lamb")
    assert rows["lookahead"]["optimizer_class"].endswith("Lookahead(torch.optim.adamw.AdamW)")
    assert rows["lookahead"]["optimizer_settings"]["k"] == 5
    assert rows["q8"]["optimizer_class"] == "torch.optim.adamw.AdamW"  # the default
    # Lookahead keeps a slow copy of every weight: one more weight-sized buffer than AdamW's two moments
    assert rows["lookahead"]["optimizer_state_mb"] == pytest.approx(rows["q8"]["optimizer_state_mb"] * 1.5, rel=0.02)


def test_frozen_layers_have_no_gradient_and_no_optimizer_state(rows):
    frozen, plain = rows["freeze"], rows["q8"]
    assert frozen["frozen_layers"] == [0] and frozen["frozen_params"] > 0
    assert frozen["frozen_params"] + frozen["trainable_params"] == frozen["params"]
    assert frozen["optimizer_state_mb"] < plain["optimizer_state_mb"]


def test_fused_linear_act_rows_show_the_fused_kernel(rows):
    kernel = rows["fused"]["fused_linear_act_kernel"]
    assert "inner_product" in kernel and "attr-post-ops:eltwise_relu" in kernel
    assert rows["fused"]["params"] == rows["q8"]["params"]  # the same weights, up's own
    assert rows["q8"].get("fused_linear_act_kernel") is None


def test_grad_accum_counts_every_micro_batch(rows):
    row = rows["accum"]
    tokens_per_step = TINY["batch_size"] * TINY["seq_len"] * 2
    assert row["tokens_per_s"] == pytest.approx(tokens_per_step / row["step_time_median_s"], rel=1e-6)
    assert row["projected_10k_steps_s"] == pytest.approx(10_000 * row["step_time_median_s"], rel=1e-6)


def test_a_preset_expands_and_keys_beside_it_win(rows):
    row = rows["preset"]
    assert row["status"] == "ok" and row["model"] == "small"
    assert (row["width"], row["heads"], row["depth"], row["mlp_ratio"]) == (768, 12, 1, 4.0)


@pytest.mark.parametrize(
    "assignments, message",
    [
        (["framework=jax", "optimizer=lamb"], "optimizer='lamb' cannot run with framework='jax'"),
        (["framework=numpy", "precision=q8"], "precision='q8' cannot run with framework='numpy'"),
        (["freeze_layers=2", "depth=2"], "freeze_layers=2 must be in [0, 1]"),
        (["fused_linear_act=true", "precision=q8"], "the fused oneDNN kernel would bypass the fake-quantised Linear"),
    ],
)
def test_impossible_values_exit_with_the_reason(assignments, message):
    done = bench_trial(*assignments, "--dataset-offline")
    assert done.returncode == 2 and message in done.stderr, done.stderr[-1000:]
