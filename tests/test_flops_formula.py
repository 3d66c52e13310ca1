"""The FLOP count agrees with what the kernels execute: PyTorch's FlopCounterMode for a real step, and the GEMMs the
CPU flash-attention kernel runs, read from MKL_VERBOSE."""

import re

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from hwctl.microbench import verbose_lines
from trainables.config import build_config
from trainables.flops import (
    attention_flops_per_sequence,
    attention_kernel,
    dense_score_pairs_per_sequence,
    flash_causal_pairs,
    flops_method,
    flops_per_step,
    score_pairs_per_sequence,
)
from trainables.torch_backend.model import GPT


# FlopCounterMode has no formula for the CPU flash op: give it its own dense SDPA formulas (backward with recompute);
# custom_mapping hands them shapes
def _flash_forward(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _flash_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


CPU_FLASH_DENSE = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _flash_forward,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _flash_backward,
}


def counted_flops(cfg) -> int:
    """FlopCounterMode's total for one optimizer step's forward and backward passes."""
    torch.manual_seed(0)
    model = GPT(cfg)
    if cfg.precision == "bf16":
        model = model.to(torch.bfloat16)
    idx = torch.randint(0, cfg.vocab_size, (cfg.batch_size, cfg.seq_len))
    counter = FlopCounterMode(display=False, custom_mapping=CPU_FLASH_DENSE)
    with counter:
        for _ in range(cfg.grad_accum):
            model(idx, idx).backward()
    return counter.get_total_flops()


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
        {"seq_len": 1024, "batch_size": 1},  # dense scores: manual attention skips nothing
    ],
)
def test_manual_attention_matches_flop_counter_exactly(tiny, extra):
    cfg = build_config(tiny | {"attn_backend": "manual"} | extra)
    assert attention_kernel(cfg) == "manual"
    assert flops_per_step(cfg) == counted_flops(cfg)


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"kv_heads": 1},
        {"attention": "local", "window": 16},
        {"attention": "sliding", "window": 16},
        {"precision": "bf16"},
        {"grad_accum": 2},
    ],
)
def test_flash_attention_up_to_512_tokens_matches_the_dense_count(tiny, extra):
    # the flash kernel's key blocks hold 512 keys: at 64 tokens every causal block is computed, as a dense count says
    cfg = build_config(tiny | {"attn_backend": "sdpa"} | extra)
    assert attention_kernel(cfg) == "sdpa-flash"
    assert score_pairs_per_sequence(cfg) == dense_score_pairs_per_sequence(cfg)
    assert flops_per_step(cfg) == counted_flops(cfg)


@pytest.mark.parametrize(
    ("extra", "skipped_share"),
    [
        ({"seq_len": 1024, "batch_size": 1}, 0.25),  # query blocks of 256: keys 512, 512, 1024, 1024 of 1024
        ({"seq_len": 768, "batch_size": 1}, 2 / 9),  # keys 512, 512, 768 of 768
        ({"seq_len": 1536, "batch_size": 1, "attention": "local", "window": 768}, 2 / 9),  # within each block
        ({"seq_len": 1024, "batch_size": 1, "attention": "sliding", "window": 128}, 0.0),  # a mask: every block
    ],
)
def test_flash_attention_count_differs_from_the_dense_one_by_the_skipped_blocks(tiny, extra, skipped_share):
    cfg = build_config(tiny | {"attn_backend": "sdpa"} | extra)
    dense = dense_score_pairs_per_sequence(cfg)
    skipped = dense - score_pairs_per_sequence(cfg)
    assert skipped == dense * skipped_share
    # what FlopCounterMode counts in excess: the skipped pairs' q.k and p.v, forward and backward (with recompute)
    excess = attention_flops_per_sequence(cfg, pairs=skipped) * cfg.batch_size * cfg.grad_accum
    assert counted_flops(cfg) - flops_per_step(cfg) == excess
    assert f"{skipped_share:.0%} of the scores skipped" in flops_method(cfg)


def test_dropout_takes_the_dense_math_path(tiny):
    # torch 2.13's CPU flash kernel has no dropout: SDPA falls back to bmm, which FlopCounterMode counts itself
    cfg = build_config(tiny | {"attn_backend": "sdpa", "dropout": 0.1, "seq_len": 1024, "batch_size": 1})
    assert attention_kernel(cfg) == "sdpa-math" and "math fallback" in flops_method(cfg)
    assert flops_per_step(cfg) == counted_flops(cfg)


@pytest.mark.skipif(not torch.backends.mkl.is_available(), reason="torch is not built with MKL")
@pytest.mark.parametrize("length", [64, 256, 512, 768, 1024, 1100])
@pytest.mark.parametrize("masked", [False, True])
def test_flash_kernel_executes_the_counted_gemms(length, masked):
    """Every GEMM the fp32 CPU flash kernel runs goes through MKL's SGEMM: their sum is what it executes."""
    heads, head_dim = 2, 16
    q, k, v = (torch.randn(1, heads, length, head_dim, requires_grad=True) for _ in range(3))
    mask = {"attn_mask": torch.ones(length, length, dtype=torch.bool).tril()} if masked else {"is_causal": True}

    def step():
        F.scaled_dot_product_attention(q, k, v, **mask).sum().backward()

    lines, _ = verbose_lines(step)
    gemms = [re.match(r"MKL_VERBOSE SGEMM\(\w,\w,(\d+),(\d+),(\d+),", line) for line in lines]
    executed = sum(2 * int(m[1]) * int(m[2]) * int(m[3]) for m in gemms if m)
    pairs = length * length if masked else flash_causal_pairs(length)
    # per pair and head: q.k and p.v forward, 2 * head_dim each; backward 2.5x (recompute + 4 gradient GEMMs)
    assert executed == 2 * 2 * head_dim * heads * pairs * 7 // 2


def test_attention_variants_cost_what_their_kernels_run(tiny):
    at = {"seq_len": 1024, "batch_size": 1}
    full = build_config(tiny | at)
    local = build_config(tiny | at | {"attention": "local", "window": 32})
    sliding = build_config(tiny | at | {"attention": "sliding", "window": 32})
    manual = build_config(tiny | at | {"attn_backend": "manual"})
    # sliding's mask makes the kernel compute every block; causal flash skips a quarter at 1024 tokens
    assert flops_per_step(local) < flops_per_step(full) < flops_per_step(sliding)
    # manual: dense scores, backward 2x; flash: 3/4 of them, backward 2.5x (7/6 of the work per score)
    assert attention_flops_per_sequence(full) * 6 * 4 == attention_flops_per_sequence(manual) * 7 * 3
