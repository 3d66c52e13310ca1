"""Matmul FLOPs of one optimizer step, counted as the kernels execute them.

Linear layers (qkv, attention output, MLP, the tied lm_head): an (m x k) @ (k x n) matmul costs 2*m*k*n FLOPs
forward and twice that backward (the gradients of its input and of its weight): 6 FLOPs per weight per token, as in
PaLM (Chowdhery et al. 2022, appendix B) and nanoGPT's `estimate_mfu`. Element-wise work (norms, softmax,
activations, AdamW) is left out: it is a few percent of the total and not what a matmul peak measures.

Attention: per head, q.k and p.v cost 2 * head_dim FLOPs each per (query, key) pair, counted over the pairs the
kernel computes, not over those the mask keeps. What torch 2.13 runs on CPU (the profiler names the kernels; their
executed GEMMs were summed under MKL_VERBOSE=1, tests/test_flops_formula.py does it again; jax and numpy count
their own kernels the same way):
- attn_backend=manual: dense L x L scores per sequence of L tokens (the mask is applied after the matmul); L is
  seq_len, or window for local attention (a batch of blocks of `window` tokens). Backward 2x forward (autograd).
- sdpa while training with dropout > 0: the math fallback (`_scaled_dot_product_attention_math`, the CPU flash kernel
  has no dropout): dense, like manual.
- sdpa otherwise: the CPU flash kernel (`aten/src/ATen/native/cpu/FlashAttentionKernel.cpp`). With is_causal (full,
  local) a query block [m, m+q) stops at the 512-key block that holds its last key, so nothing is skipped up to
  L = 512, 22% at 768, 25% at 1024, towards the half of the scores only for long sequences; with a mask (sliding)
  every block is computed: dense L x L. Its backward recomputes the scores: 5 score-sized matmuls against the
  forward's 2, i.e. 2.5x forward, not 2x.

So, unlike PaLM's model FLOPs (dense causal attention, 12 * layers * seq_len * attn_dim per token, no recompute),
sdpa rows count the flash backward's recompute (what PaLM calls hardware FLOPs) and leave out the 512-key blocks the
flash kernel skips. torch.utils.flop_counter.FlopCounterMode counts manual attention and the math fallback as here,
and, given the CPU flash op (it has no formula for it), dense SDPA with the recompute: the difference is exactly the
skipped blocks. torch.compile keeps these kernels (inductor calls the flash op and bmm as extern kernels).
"""

from __future__ import annotations

from trainables.config import TrialConfig
from trainables.trainer import framework_support

# torch 2.13 FlashAttentionKernel.cpp: blocks of 512 keys; query blocks of 32 rows below 192 tokens, 64 below 768,
# 256 from there (flash_attention_kernel_impl's template arguments); a block never exceeds the sequence
FLASH_KV_BLOCK = 512
FLASH_Q_BLOCKS = ((192, 32), (768, 64))
FLASH_Q_BLOCK_LONG = 256


def attention_kernel(cfg: TrialConfig) -> str:
    """manual, sdpa-math (dense fallback: dropout while training), sdpa-flash (the CPU flash kernel) or sdpa-xla
    (jax.nn.dot_product_attention on CPU: XLA's dense implementation, masked after the matmul, autograd backward)."""
    if cfg.attn_backend == "manual":
        return "manual"
    kernel = framework_support(cfg.framework).sdpa_kernel  # what its sdpa runs, declared
    if kernel == "sdpa-flash" and cfg.dropout > 0:
        return "sdpa-math"  # the CPU flash kernel has no dropout
    return kernel


def attention_length(cfg: TrialConfig) -> int:
    """Tokens of one attended sequence: local attention is a batch of blocks of `window` tokens."""
    return cfg.window if cfg.attention == "local" else cfg.seq_len


def flash_q_block(length: int) -> int:
    block = next((size for below, size in FLASH_Q_BLOCKS if length < below), FLASH_Q_BLOCK_LONG)
    return min(block, length)


def flash_causal_pairs(length: int) -> int:
    """(query, key) pairs per head the causal flash kernel scores for one sequence of `length` tokens: each query
    block [m, m+q) runs whole key blocks up to the one that holds key m+q-1."""
    q_block, kv_block = flash_q_block(length), min(FLASH_KV_BLOCK, length)
    pairs = 0
    for m in range(0, length, q_block):
        rows = min(q_block, length - m)
        last_key = m + rows  # exclusive
        pairs += rows * min(-(-last_key // kv_block) * kv_block, length)
    return pairs


def score_pairs_per_sequence(cfg: TrialConfig) -> int:
    """(query, key) pairs per head and layer whose scores the attention kernel computes for one sequence."""
    length = attention_length(cfg)
    blocks = cfg.seq_len // length
    causal_flash = attention_kernel(cfg) == "sdpa-flash" and cfg.attention != "sliding"
    return blocks * (flash_causal_pairs(length) if causal_flash else length * length)


def dense_score_pairs_per_sequence(cfg: TrialConfig) -> int:
    """The pairs a dense count takes (FlopCounterMode's SDPA formula, manual attention): L x L per block."""
    length = attention_length(cfg)
    return cfg.seq_len // length * length * length


def linear_flops_per_token(cfg: TrialConfig) -> int:
    """Forward FLOPs of the weight matmuls per token."""
    qkv = 2 * cfg.width * (cfg.heads + 2 * cfg.kv_heads) * cfg.head_dim
    attn_out = 2 * cfg.attn_dim * cfg.width
    mlp = 2 * 2 * cfg.width * cfg.mlp_hidden
    lm_head = 2 * cfg.width * cfg.vocab_size
    return cfg.depth * (qkv + attn_out + mlp) + lm_head


def attention_flops_per_sequence(cfg: TrialConfig, pairs: int | None = None) -> int:
    """Forward + backward FLOPs of the score matmuls (q.k, p.v) of all layers for one sequence."""
    pairs = score_pairs_per_sequence(cfg) if pairs is None else pairs
    forward = 2 * 2 * cfg.attn_dim * pairs  # q.k and p.v: 2 * head_dim per pair and head
    # the flash backward recomputes q.k: 5 score-sized matmuls; autograd of two bmm runs 4
    backward = forward * 5 // 2 if attention_kernel(cfg) == "sdpa-flash" else 2 * forward
    return cfg.depth * (forward + backward)


def flops_per_step(cfg: TrialConfig) -> int:
    """FLOPs of one optimizer step (all micro-batches, forward + backward)."""
    sequences = cfg.batch_size * cfg.grad_accum
    return 3 * linear_flops_per_token(cfg) * cfg.tokens_per_step + attention_flops_per_sequence(cfg) * sequences


def flops_method(cfg: TrialConfig) -> str:
    kernel = attention_kernel(cfg)
    skipped = 1 - score_pairs_per_sequence(cfg) / dense_score_pairs_per_sequence(cfg)
    attention = {
        "manual": "dense scores, backward 2x",
        "sdpa-math": "SDPA math fallback (dropout): dense scores, backward 2x",
        "sdpa-xla": "jax.nn.dot_product_attention (XLA): dense scores, backward 2x",
        "sdpa-flash": f"SDPA CPU flash kernel: the 512-key blocks it computes ({skipped:.0%} of the scores skipped), "
        "backward 2.5x (recomputes the scores)",
    }[kernel]
    return f"executed matmul FLOPs (trainables/flops.py): linear layers 6 per weight per token; attention: {attention}"
