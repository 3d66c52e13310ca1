"""The optimizer axis and layer freezing (trainables/torch_backend/optimizers.py) on a tiny GPT: each optimizer learns, each is what
its name says, and frozen blocks get neither gradient, nor update, nor optimizer state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainables.config import build_config
from trainables.torch_backend.model import GPT
from trainables.torch_backend.optimizers import build_optimizer, freeze_layers, optimizer_state_bytes
from trainables.weights import ADAMW, initial_weights, sample_batches

OPTIMIZERS = ("adamw", "sgd", "lamb", "lookahead")
TINY_GPT = dict(depth=2, width=64, heads=4, seq_len=32, batch_size=4, vocab_size=512, dataset="offline")


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def config(**values):
    return build_config(TINY_GPT | values)


def make_model(cfg, dtype: torch.dtype = torch.float32) -> GPT:
    """The tiny GPT with the shared initial weights, loaded as trainables/torch_backend/trainer.py does."""
    model = GPT(cfg)
    with torch.no_grad():
        for name, array in initial_weights(cfg).items():
            model.get_parameter(name).copy_(torch.from_numpy(array))
    return model.to(dtype).train()


def batches(tokens, cfg, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in sample_batches(tokens, cfg, count)]


def train(model, optimizer, data) -> list[float]:
    """The trainer's step: forward, backward, optimizer.step(), zero_grad(set_to_none=True)."""
    losses = []
    for inputs, targets in data:
        loss = model(inputs, targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    return losses


def weights(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def trained(tokens, steps: int, **values) -> tuple[GPT, torch.optim.Optimizer, dict]:
    cfg = config(**values)
    model = make_model(cfg)
    frozen = freeze_layers(model, cfg.freeze_layers)
    optimizer, facts = build_optimizer(cfg, model)
    train(model, optimizer, batches(tokens, cfg, steps))
    return model, optimizer, frozen | facts


# lr per optimizer, each where it learns clearly in 30 steps (calibrated: the mean of the last 5 losses falls by
# 0.72-0.91 from ln(512) = 6.24): adamw the config's default; SGD moves absolute steps of lr * gradient, and these
# gradients are small, so it needs ~100x (at 1e-3 it falls by 0.03); LAMB's steps are relative to each tensor's norm
# (trust ratio), so it needs ~10x; Lookahead halves AdamW's progress every 5 steps, so it gets 3x.
LEARNING_RATES = {"adamw": 1e-3, "sgd": 0.1, "lamb": 1e-2, "lookahead": 3e-3}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_each_optimizer_learns(tokens, name):
    cfg = config(optimizer=name, learning_rate=LEARNING_RATES[name])
    model = make_model(cfg)
    optimizer, _ = build_optimizer(cfg, model)
    losses = train(model, optimizer, batches(tokens, cfg, 30))
    assert losses[0] == pytest.approx(6.24, abs=0.1)  # ln(512): the untrained model guesses uniformly
    assert np.mean(losses[-5:]) < losses[0] - 0.5


def test_facts_name_the_class_and_read_back_the_settings():
    expected = {
        "adamw": ("torch.optim.adamw.AdamW", {"betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.1, "fused": True}),
        "sgd": ("torch.optim.sgd.SGD", {"momentum": 0.9, "weight_decay": 1e-4, "nesterov": False, "foreach": True}),
        "lamb": ("pytorch_optimizer.optimizer.lamb.Lamb", {"betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.1}),
        "lookahead": (
            "pytorch_optimizer.optimizer.lookahead.Lookahead(torch.optim.adamw.AdamW)",
            {"k": 5, "alpha": 0.5, "betas": [0.9, 0.999], "weight_decay": 0.1, "fused": True},
        ),
    }
    for name, (cls, settings) in expected.items():
        cfg = config(optimizer=name, learning_rate=2e-3)
        _, facts = build_optimizer(cfg, make_model(cfg))
        assert facts["optimizer_class"] == cls
        assert facts["optimizer_settings"] | settings == facts["optimizer_settings"]
        assert facts["optimizer_settings"]["lr"] == 2e-3
        assert "params" not in facts["optimizer_settings"]
        assert json_roundtrip(facts) == facts


def json_roundtrip(value):
    import json

    return json.loads(json.dumps(value))


def test_unknown_optimizer_is_a_clear_error():
    cfg = config()
    with pytest.raises(ValueError, match="optimizer='adam'"):
        build_optimizer(cfg.replace(optimizer="adam"), make_model(cfg))


def test_adamw_is_todays_fused_adamw_bit_for_bit(tokens):
    cfg = config()
    data = batches(tokens, cfg, 3)
    built = make_model(cfg)
    train(built, build_optimizer(cfg, built)[0], data)
    direct = make_model(cfg)
    train(direct, torch.optim.AdamW(direct.parameters(), lr=cfg.learning_rate, fused=True, **ADAMW), data)
    for name, param in direct.named_parameters():
        assert torch.equal(built.get_parameter(name), param), name


def test_lamb_scales_each_tensors_step_by_its_trust_ratio(tokens):
    """After one LAMB step every tensor (after its decoupled decay) has moved by lr / (1 - beta1) * min(|w|, 10):
    the trust ratio |w| / |adam update| sets the step's size per tensor. AdamW's relative steps differ per tensor."""
    cfg = config(optimizer="lamb", learning_rate=1e-2)
    model = make_model(cfg)
    before = weights(model)
    optimizer, _ = build_optimizer(cfg, model)
    train(model, optimizer, batches(tokens, cfg, 1))
    lr, (beta1, _), decay = cfg.learning_rate, ADAMW["betas"], ADAMW["weight_decay"]
    checked = 0
    for name, param in model.named_parameters():
        decayed = before[name] * (1 - lr * decay)
        if decayed.norm() == 0:  # LayerNorm biases start at 0: trust ratio 1 by definition
            continue
        step = (param.detach() - decayed).norm() / decayed.norm().clamp(max=10)
        assert float(step) == pytest.approx(lr / (1 - beta1), rel=1e-3), name
        assert "trust_ratio" in optimizer.state[param]
        checked += 1
    assert checked == 15  # wte, wpe, ln_f.weight and each block's ln_1, qkv, proj, ln_2, up and down weights

    adamw_cfg = cfg.replace(optimizer="adamw")
    adamw = make_model(adamw_cfg)
    train(adamw, build_optimizer(adamw_cfg, adamw)[0], batches(tokens, cfg, 1))
    relative = [float((p.detach() - before[n]).norm() / before[n].norm()) for n, p in adamw.named_parameters()]
    relative = [r for r, w in zip(relative, before.values(), strict=True) if w.norm() > 0]
    assert max(relative) > 3 * min(relative)


def test_lookahead_is_adamw_then_interpolates_every_fifth_step(tokens):
    cfg = config(optimizer="lookahead")
    data = batches(tokens, cfg, 5)
    start = make_model(cfg)
    initial = weights(start)
    optimizer, _ = build_optimizer(cfg, start)
    adamw = make_model(cfg)
    plain = build_optimizer(cfg.replace(optimizer="adamw"), adamw)[0]

    train(start, optimizer, data[:4])
    train(adamw, plain, data[:4])
    for name, param in adamw.named_parameters():  # the first k-1 steps are plain AdamW's
        assert torch.equal(start.get_parameter(name), param), name

    train(start, optimizer, data[4:])
    train(adamw, plain, data[4:])
    for name, fast in adamw.named_parameters():  # step k: slow + alpha * (fast - slow), the new slow weights
        param = start.get_parameter(name)
        expected = initial[name] + 0.5 * (fast.detach() - initial[name])
        torch.testing.assert_close(param.detach(), expected, rtol=0, atol=1e-7)
        assert not torch.equal(param, fast), name
        assert torch.equal(optimizer.state[param]["slow_params"], param)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_frozen_blocks_get_no_gradient_update_or_state(tokens, name):
    cfg = config(optimizer=name, freeze_layers=1)
    model = make_model(cfg)
    before = weights(model)
    facts = freeze_layers(model, cfg.freeze_layers)
    optimizer, _ = build_optimizer(cfg, model)
    data = batches(tokens, cfg, 1)
    inputs, targets = data[0]
    model(inputs, targets).backward()
    frozen = list(model.blocks[0].parameters())
    assert all(p.grad is None for p in frozen)
    optimizer.step()  # zero_grad after the checks: set_to_none would hide a gradient
    optimizer.zero_grad(set_to_none=True)

    states = [opt.state for opt in (optimizer, getattr(optimizer, "optimizer", None)) if opt is not None]
    for pname, param in model.named_parameters():
        if pname.startswith("blocks.0."):
            assert torch.equal(param, before[pname]), pname
            assert not param.requires_grad and all(param not in state for state in states), pname
        elif pname.startswith("blocks.1.") and pname.endswith("weight"):
            assert not torch.equal(param, before[pname]), pname
            assert all(param in state for state in states), pname
    assert not torch.equal(model.wte.weight, before["wte.weight"])  # the tied embedding / lm_head still trains
    block = sum(p.numel() for p in frozen)
    assert facts == {
        "frozen_layers": [0],
        "frozen_params": block,
        "trainable_params": model.num_params() - block,
    }


def test_freeze_nothing_and_out_of_range():
    cfg = config()
    model = make_model(cfg)
    assert freeze_layers(model, 0) == {"frozen_layers": [], "frozen_params": 0, "trainable_params": model.num_params()}
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="freeze_layers=2"):
        freeze_layers(model, 2)  # depth 2: at least one block must train


def test_optimizer_state_bytes(tokens):
    def state_bytes(**values) -> tuple[int, int, int]:
        model, optimizer, facts = trained(tokens, 1, **values)
        tensors = sum(1 for p in model.parameters() if p.requires_grad)
        return optimizer_state_bytes(optimizer), facts["trainable_params"], tensors

    full, params, tensors = state_bytes()
    # fused AdamW: exp_avg and exp_avg_sq in fp32 per element, and a 4-byte fp32 step counter per tensor
    assert full == 2 * 4 * params + 4 * tensors
    frozen, frozen_params, frozen_tensors = state_bytes(freeze_layers=1)
    assert frozen == 2 * 4 * frozen_params + 4 * frozen_tensors and frozen < full
    assert state_bytes(optimizer="sgd")[0] == 4 * params  # one momentum buffer
    assert state_bytes(optimizer="lamb")[0] == 2 * 4 * params + 3 * 4 * tensors  # + weight/update norms, trust ratio
    assert state_bytes(optimizer="lookahead")[0] == full + 4 * params  # + the slow weights


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_bf16_parameters_are_updated(tokens, name):
    """precision=bf16 casts the model: every optimizer must really move bf16 weights (torch 2.13's CPU fused SGD
    leaves them unchanged, pytorch/pytorch#191763, so sgd is foreach)."""
    cfg = config(optimizer=name, learning_rate=LEARNING_RATES[name], precision="bf16")
    model = make_model(cfg, torch.bfloat16)
    before = weights(model)
    optimizer, _ = build_optimizer(cfg, model)
    losses = train(model, optimizer, batches(tokens, cfg, 5))
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    for pname, param in model.named_parameters():
        if param.dim() == 2:  # the matrices; an update to a LayerNorm weight of 1.0 may round away in bf16
            assert param.dtype == torch.bfloat16
            changed = (param != before[pname]).float().mean()
            # > 0.25, not ~1: SGD's steps on q and k (tiny gradients under near-uniform attention) round away in
            # bf16, so only ~37% of qkv moves; the fused-SGD bug moves none
            assert changed > 0.25, pname
