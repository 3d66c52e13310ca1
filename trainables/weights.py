"""The initial weights every framework trains from: one NumPy generator keyed by the config's seed.

The same config therefore starts from the same numbers in torch, jax and numpy, and their rows' loss_first agree
(tests/test_framework_parity.py). Names and shapes are PyTorch's state_dict (a Linear's weight is (out, in)); a
framework that keeps another layout transposes on load and on its way back. The output projection is tied to `wte`
(GPT-2), so it has no entry of its own.

Init (GPT-2, as nanoGPT): every Linear and Embedding weight ~ N(0, 0.02); the residual projections (attn.proj,
mlp.down) ~ N(0, 0.02 / sqrt(2 * depth)); LayerNorm weight 1, bias 0. Linears have no bias.
"""

from __future__ import annotations

import math

import numpy as np

INIT_STD = 0.02
LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default; every framework uses it
ADAMW = {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.1}  # torch.optim.AdamW's, on every parameter


def parameter_shapes(cfg) -> dict[str, tuple[int, ...]]:
    """Name -> shape in PyTorch layout, in the order the generator draws them."""
    width, hidden = cfg.width, cfg.mlp_hidden
    shapes = {"wte.weight": (cfg.vocab_size, width), "wpe.weight": (cfg.seq_len, width)}
    for layer in range(cfg.depth):
        prefix = f"blocks.{layer}."
        shapes |= {
            prefix + "ln_1.weight": (width,),
            prefix + "ln_1.bias": (width,),
            prefix + "attn.qkv.weight": ((cfg.heads + 2 * cfg.kv_heads) * cfg.head_dim, width),  # q, k, v stacked
            prefix + "attn.proj.weight": (width, cfg.attn_dim),
            prefix + "ln_2.weight": (width,),
            prefix + "ln_2.bias": (width,),
            prefix + "mlp.up.weight": (hidden, width),
            prefix + "mlp.down.weight": (width, hidden),
        }
    return shapes | {"ln_f.weight": (width,), "ln_f.bias": (width,)}


def initial_weights(cfg) -> dict[str, np.ndarray]:
    """float32 arrays, PyTorch names and layout, drawn in parameter_shapes' order from PCG64(cfg.seed)."""
    rng = np.random.default_rng(cfg.seed)
    residual_std = INIT_STD / math.sqrt(2 * cfg.depth)
    weights = {}
    for name, shape in parameter_shapes(cfg).items():
        if ".ln_" in name or name.startswith("ln_"):
            weights[name] = np.ones(shape, np.float32) if name.endswith("weight") else np.zeros(shape, np.float32)
            continue
        std = residual_std if name.endswith(("attn.proj.weight", "mlp.down.weight")) else INIT_STD
        weights[name] = rng.standard_normal(shape, dtype=np.float32) * np.float32(std)
    return weights


def sample_batches(tokens: np.ndarray, cfg, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`count` (inputs, targets) micro-batches of random windows of the token stream, int64 (batch_size, seq_len),
    drawn from cfg.seed: the same numbers in every framework."""
    rng = np.random.default_rng(cfg.seed)
    seq, batch = cfg.seq_len, cfg.batch_size
    if len(tokens) < seq + 2:
        raise ValueError(f"the corpus has {len(tokens)} tokens, fewer than seq_len={seq} + 1")
    batches = []
    for _ in range(count):
        starts = rng.integers(0, len(tokens) - seq - 1, size=batch)
        rows = np.stack([tokens[s : s + seq + 1] for s in starts]).astype(np.int64)  # (B, T+1)
        batches.append((np.ascontiguousarray(rows[:, :-1]), np.ascontiguousarray(rows[:, 1:])))
    return batches
