"""A short run on real text really learns, and both attention backends compute the same training."""

import math

import pytest
import torch

from trainables.config import build_config
from trainables.timing import PHASES_MEASURED, measure
from trainables.trainer import load_trainer

TorchTrainer = load_trainer("torch")


def train(tokens, values: dict, steps: int = 25) -> dict:
    cfg = build_config(values | {"warmup_steps": 0, "measure_steps": steps, "learning_rate": 3e-3})
    trainer = TorchTrainer(cfg)
    batches = trainer.make_batches(tokens, (steps + 1) * cfg.grad_accum)
    result = measure(
        trainer, batches, grad_accum=cfg.grad_accum, warmup_steps=0, measure_steps=steps, measure_seconds=0
    )
    return result | {"trainer": trainer}


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"precision": "bf16"},
        {"precision": "mixed"},
        {"attention": "local", "window": 16, "kv_heads": 1},
        {"grad_accum": 2, "dropout": 0.1},
    ],
)
def test_loss_falls(tokens, tiny, extra):
    result = train(tokens, tiny | extra)
    assert result["loss_first"] == pytest.approx(6.24, abs=0.1)  # ln(512): an untrained model guesses uniformly
    assert result["loss_last"] < result["loss_first"] - 0.7
    assert result["measure_steps_run"] == 25


def test_kept_losses_hold_no_autograd_graph(tokens, tiny):
    trainer = TorchTrainer(build_config(tiny))
    inputs, targets = trainer.make_batches(tokens, 1)[0]
    loss = trainer.forward(inputs, targets)
    trainer.backward(loss)
    kept = trainer.detach(loss)
    assert loss.grad_fn is not None and kept.grad_fn is None
    assert trainer.loss_value(kept) == pytest.approx(6.24, abs=0.1)


def test_bf16_weights_are_bf16_and_mixed_keeps_fp32_masters(tokens, tiny):
    assert train(tokens, tiny | {"precision": "bf16"}, steps=3)["trainer"].model.wte.weight.dtype == torch.bfloat16
    assert train(tokens, tiny | {"precision": "mixed"}, steps=3)["trainer"].model.wte.weight.dtype == torch.float32


@pytest.mark.parametrize("attention", ["full", "sliding"])
def test_manual_and_sdpa_give_the_same_losses(tokens, tiny, attention):
    common = tiny | {"attention": attention, "window": 16, "kv_heads": 1}
    manual = train(tokens, common | {"attn_backend": "manual"}, steps=5)
    sdpa = train(tokens, common | {"attn_backend": "sdpa"}, steps=5)
    assert manual["loss_first"] == pytest.approx(sdpa["loss_first"], abs=1e-5)
    assert manual["loss_last"] == pytest.approx(sdpa["loss_last"], abs=1e-3)


def test_protocol_counts_and_statistics(tokens, tiny):
    cfg = build_config(tiny)
    trainer = TorchTrainer(cfg)
    batches = trainer.make_batches(tokens, 4)
    result = measure(trainer, batches, grad_accum=1, warmup_steps=2, measure_steps=6, measure_seconds=0)
    times = result["step_times_s"]
    assert len(times) == result["measure_steps_run"] == 6
    assert result["step_time_min_s"] == min(times) and result["step_time_max_s"] == max(times)
    assert result["step_time_min_s"] <= result["step_time_median_s"] <= result["step_time_max_s"]
    phases = result["forward_s"] + result["backward_s"] + result["optimizer_s"]
    assert phases == pytest.approx(result["step_time_mean_s"], rel=0.05)
    assert result["phase_split"] == PHASES_MEASURED == "measured"
    assert result["step_time_cv"] == pytest.approx(result["step_time_std_s"] / result["step_time_mean_s"])
    assert result["stop_reason"] == "measure_steps"


def test_one_measured_step_has_no_spread_rather_than_zero(tokens, tiny):
    trainer = TorchTrainer(build_config(tiny))
    result = measure(
        trainer, trainer.make_batches(tokens, 2), grad_accum=1, warmup_steps=0, measure_steps=1, measure_seconds=0
    )
    assert result["measure_steps_run"] == 1 and result["step_time_mean_s"] > 0
    spreads = ("step_time_std_s", "step_time_cv", "forward_std_s", "backward_std_s", "optimizer_std_s")
    assert all(math.isnan(result[key]) for key in spreads), {key: result[key] for key in spreads}


def test_seconds_budget_stops_early_but_after_three_steps(tokens, tiny):
    cfg = build_config(tiny)
    trainer = TorchTrainer(cfg)
    result = measure(
        trainer, trainer.make_batches(tokens, 4), grad_accum=1, warmup_steps=0, measure_steps=1000, measure_seconds=1e-9
    )
    assert (result["measure_steps_run"], result["stop_reason"]) == (3, "measure_seconds")


def test_batches_are_deterministic_per_seed(tokens, tiny):
    a = TorchTrainer(build_config(tiny)).make_batches(tokens, 3)
    b = TorchTrainer(build_config(tiny)).make_batches(tokens, 3)
    c = TorchTrainer(build_config(tiny | {"seed": 1})).make_batches(tokens, 3)
    assert all(torch.equal(x[0], y[0]) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0][0], c[0][0])
    inputs, targets = a[0]
    assert torch.equal(inputs[:, 1:], targets[:, :-1])  # targets are the inputs shifted by one token


def test_inductor_compiles_and_learns(tokens, tiny):
    result = train(tokens, tiny | {"compile": "inductor"}, steps=15)
    assert result["loss_last"] < result["loss_first"] - 0.5
    # compile happens in the first step: it is far slower than a warm step
    assert result["time_to_first_step_s"] > 20 * result["step_time_median_s"]
