"""The analytic FLOP count agrees with what PyTorch's FlopCounterMode counts for a real step."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from trainables.config import build_config
from trainables.flops import flops_per_step
from trainables.torch_model import GPT


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"kv_heads": 1},  # MQA
        {"heads": 4, "kv_heads": 2, "head_dim": 24},  # GQA, attention dim != width
        {"attention": "local", "window": 16},
        {"attention": "sliding", "window": 16},
        {"mlp_ratio": 2, "activation": "silu", "depth": 3},
        {"grad_accum": 2},
    ],
)
def test_formula_matches_flop_counter(tiny, extra):
    # the manual backend: CPU SDPA kernels are not in FlopCounterMode's registry
    cfg = build_config(tiny | {"attn_backend": "manual"} | extra)
    torch.manual_seed(0)
    model = GPT(cfg)
    idx = torch.randint(0, cfg.vocab_size, (cfg.batch_size, cfg.seq_len))
    counter = FlopCounterMode(display=False)
    with counter:
        for _ in range(cfg.grad_accum):
            model(idx, idx).backward()
    counted = counter.get_total_flops()
    assert counted > 0
    assert flops_per_step(cfg) == pytest.approx(counted, rel=0.03)


def test_local_attention_costs_less_than_full(tiny):
    full = build_config(tiny | {"seq_len": 256})
    local = build_config(tiny | {"seq_len": 256, "attention": "local", "window": 32})
    sliding = build_config(tiny | {"seq_len": 256, "attention": "sliding", "window": 32})
    assert flops_per_step(local) < flops_per_step(full) == flops_per_step(sliding)
