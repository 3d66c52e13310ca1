"""Analytic FLOPs of one optimizer step: matmul FLOPs only, the convention of PaLM/nanoGPT MFU.

A matmul of (m x k) @ (k x n) costs 2*m*k*n FLOPs forward; its backward computes the gradient of
both inputs, 2x the forward. Element-wise work (norms, softmax, activations, AdamW) is left out:
it is a few percent of the total and is not what a matmul peak measures. Attention scores are
counted dense (S x S per head for full and sliding attention, W x W per block for local), which
is what the kernels compute and what torch.utils.flop_counter.FlopCounterMode counts.
"""

from __future__ import annotations

from trainables.config import TrialConfig

FLOPS_METHOD = "analytic matmul FLOPs, forward x3 for forward+backward; attention scores dense per (block) sequence"


def forward_flops_per_token(cfg: TrialConfig) -> int:
    attended = cfg.window if cfg.attention == "local" else cfg.seq_len
    qkv = 2 * cfg.width * (cfg.heads + 2 * cfg.kv_heads) * cfg.head_dim
    attn_out = 2 * cfg.attn_dim * cfg.width
    scores_and_values = 2 * 2 * cfg.attn_dim * attended
    mlp = 2 * 2 * cfg.width * cfg.mlp_hidden
    lm_head = 2 * cfg.width * cfg.vocab_size
    return cfg.depth * (qkv + attn_out + scores_and_values + mlp) + lm_head


def flops_per_step(cfg: TrialConfig) -> int:
    """FLOPs of one optimizer step (all micro-batches, forward + backward)."""
    return 3 * forward_flops_per_token(cfg) * cfg.tokens_per_step
