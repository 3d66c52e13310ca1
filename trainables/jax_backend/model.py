"""The decoder-only transformer LM of trainables/torch_backend/model.py in JAX, as pure functions over a flat dict of
weights.

Read it side by side with the torch model: the same sections in the same order, the same names and PyTorch's layout
(a Linear's weight is (out, in), so `linear` contracts with its second axis, as nn.Linear does), so the weights of
trainables/weights.py load as they are and gradients come back in PyTorch's names. The output projection is `wte`
itself (tied), so its gradient is the sum of the embedding's and the projection's, as in torch.

Attention variants, GQA/MQA and the dropout sites are those of the torch model. Where torch's CPU kernels compute a
bf16 op in fp32 inside (LayerNorm statistics, softmax), so does this. `key` is a jax.random key for dropout, None when
dropout is off: then no random numbers are drawn at all.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from trainables.config import TrialConfig
from trainables.weights import LAYER_NORM_EPS

# torch's nn.GELU() default is the exact erf form; jax.nn.gelu defaults to the tanh approximation
ACTIVATIONS = {"gelu": partial(jax.nn.gelu, approximate=False), "relu": jax.nn.relu, "silu": jax.nn.silu}
# dropout sites per block, for distinct random streams: attention weights, attention output, MLP output
SITES_PER_BLOCK = 3


def attention_mask(kind: str, length: int, window: int) -> jax.Array:
    """Boolean (length, length) mask, True where query i may attend to key j."""
    i = jnp.arange(length)[:, None]
    j = jnp.arange(length)[None, :]
    allowed = j <= i
    if kind == "sliding":
        allowed &= j > i - window
    return allowed


def linear(x: jax.Array, weight: jax.Array) -> jax.Array:
    """nn.Linear without bias: x @ weight.T as one dot_general (no transposed copy of the weight, even eagerly)."""
    return lax.dot_general(x, weight, (((x.ndim - 1,), (1,)), ((), ())))


def layer_norm(x: jax.Array, weight: jax.Array, bias: jax.Array) -> jax.Array:
    # statistics in fp32 for bf16 too, as torch's CPU LayerNorm kernel does; the result in the input's dtype
    x32 = x.astype(jnp.float32)
    mean = x32.mean(axis=-1, keepdims=True)
    variance = jnp.square(x32 - mean).mean(axis=-1, keepdims=True)  # biased, as torch's
    normed = (x32 - mean) * lax.rsqrt(variance + LAYER_NORM_EPS)
    return (normed * weight.astype(jnp.float32) + bias.astype(jnp.float32)).astype(x.dtype)


def dropout(x: jax.Array, rate: float, key: jax.Array | None, site: int) -> jax.Array:
    """Inverted dropout as nn.Dropout in training mode; the masks are jax's own, so they differ from torch's."""
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(jax.random.fold_in(key, site), 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def softmax(scores: jax.Array) -> jax.Array:
    # in fp32 for bf16 scores too, as torch's CPU softmax kernel does
    return jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(scores.dtype)


# ---- CausalSelfAttention -------------------------------------------------------------------------------------------
def attention(params: dict, prefix: str, x: jax.Array, cfg: TrialConfig, key, site: int) -> jax.Array:
    # shapes: B batch, T seq_len, C width, nh heads, nkv kv_heads, hs head_dim; N sequences of L tokens each
    tokens, seq = x.shape[0], cfg.seq_len  # x (B*T, C): the tokens of the batch in sequence order
    batch = tokens // seq
    heads, kv_heads, head_dim = cfg.heads, cfg.kv_heads, cfg.head_dim
    q, k, v = jnp.split(
        linear(x, params[prefix + "qkv.weight"]), [heads * head_dim, (heads + kv_heads) * head_dim], axis=-1
    )  # (B*T, nh*hs), (B*T, nkv*hs), (B*T, nkv*hs)
    # local attention = a batch of independent blocks of `window` tokens (a free reshape):
    # N = B*T//window blocks of L = window tokens; otherwise N = B sequences of L = T tokens
    n, length = (batch * seq // cfg.window, cfg.window) if cfg.attention == "local" else (batch, seq)
    # jax.nn.dot_product_attention's layout is (N, L, heads, hs): torch's transpose(1, 2) comes inside _manual
    q = q.reshape(n, length, heads, head_dim)  # (B*T, nh*hs) -> (N, L, nh, hs)
    k = k.reshape(n, length, kv_heads, head_dim)  # (B*T, nkv*hs) -> (N, L, nkv, hs)
    v = v.reshape(n, length, kv_heads, head_dim)  # (B*T, nkv*hs) -> (N, L, nkv, hs)
    if cfg.attn_backend == "sdpa":
        y = _sdpa(q, k, v, cfg)  # (N, L, nh, hs)
    else:
        y = _manual(q, k, v, cfg, key, site)  # (N, L, nh, hs)
    # merge heads; for local, the N = B*T//window blocks lie in sequence order, so they merge back to (B*T)
    y = y.reshape(tokens, heads * head_dim)  # (N, L, nh, hs) -> (B*T, nh*hs)
    return dropout(linear(y, params[prefix + "proj.weight"]), cfg.dropout, key, site + 1)  # (B*T, C)


def _sdpa(q, k, v, cfg: TrialConfig):
    # on CPU jax picks its XLA implementation (implementation=None -> "xla"): dense scores, masked, fp32 softmax;
    # GQA by grouping query heads under their kv head, without copying k and v. It has no dropout: the trainer
    # refuses dropout > 0 with sdpa rather than drop the attention dropout torch applies.
    if cfg.attention == "sliding":
        # (window - 1, 0): token i sees j in [i - window + 1, i], torch's band mask j > i - window, j <= i
        return jax.nn.dot_product_attention(q, k, v, is_causal=True, local_window_size=(cfg.window - 1, 0))
    return jax.nn.dot_product_attention(q, k, v, is_causal=True)  # (N, L, nh, hs)


def _manual(q, k, v, cfg: TrialConfig, key, site: int):
    n, length = q.shape[:2]
    group = cfg.heads // cfg.kv_heads
    # group query heads under their shared kv head (query head h = kv head h // group, member h % group), as
    # torch's _manual; the einsums broadcast k and v over the group instead of copying them
    q = q.reshape(n, length, cfg.kv_heads, group, cfg.head_dim)  # (N, L, nh, hs) -> (N, L, nkv, g, hs)
    scores = jnp.einsum("nqkgd,nskd->nkgqs", q, k) * (1.0 / math.sqrt(cfg.head_dim))  # (N, nkv, g, L, L)
    mask = attention_mask("sliding" if cfg.attention == "sliding" else "causal", length, cfg.window)
    scores = jnp.where(mask, scores, -jnp.inf)  # mask (L, L) broadcast
    weights = dropout(softmax(scores), cfg.dropout, key, site)  # (N, nkv, g, L, L)
    y = jnp.einsum("nkgqs,nskd->nqkgd", weights, v)  # (N, nkv, g, L, L) @ (N, L, nkv, hs) -> (N, L, nkv, g, hs)
    return y.reshape(n, length, cfg.heads, cfg.head_dim)  # (N, L, nkv, g, hs) -> (N, L, nh, hs)


# ---- MLP, Block, GPT -----------------------------------------------------------------------------------------------
def mlp(params: dict, prefix: str, x: jax.Array, cfg: TrialConfig, key, site: int) -> jax.Array:
    hidden = ACTIVATIONS[cfg.activation](linear(x, params[prefix + "up.weight"]))  # (B*T, mlp_hidden)
    return dropout(linear(hidden, params[prefix + "down.weight"]), cfg.dropout, key, site)  # (B*T, C)


def block(params: dict, prefix: str, x: jax.Array, cfg: TrialConfig, key, site: int) -> jax.Array:
    normed = layer_norm(x, params[prefix + "ln_1.weight"], params[prefix + "ln_1.bias"])
    x = x + attention(params, prefix + "attn.", normed, cfg, key, site)
    normed = layer_norm(x, params[prefix + "ln_2.weight"], params[prefix + "ln_2.bias"])
    return x + mlp(params, prefix + "mlp.", normed, cfg, key, site + 2)


def gpt_loss(params: dict, cfg: TrialConfig, idx: jax.Array, targets: jax.Array, key=None) -> jax.Array:
    """Mean cross-entropy of one micro-batch; idx and targets (B, T) integer tokens."""
    wte = params["wte.weight"]
    x = wte[idx] + params["wpe.weight"][: idx.shape[1]]  # (B, T, C)
    # every op but attention works token by token: (B*T, C) from here on, a free reshape. XLA's CPU fusions of
    # element-wise ops around dots ran 2x slower on (B, T, C) than on (B*T, C) (GELU's MLP here: 122 ms vs 80 ms)
    x = dropout(x.reshape(-1, x.shape[-1]), cfg.dropout, key, 0)  # (B*T, C)
    for layer in range(cfg.depth):
        x = block(params, f"blocks.{layer}.", x, cfg, key, 1 + layer * SITES_PER_BLOCK)
    logits = linear(layer_norm(x, params["ln_f.weight"], params["ln_f.bias"]), wte)  # (B*T, vocab_size), tied
    # the loss in fp32 even for bf16 weights: a bf16 log-softmax over 8k+ classes loses the signal
    logits = logits.astype(jnp.float32)  # (B*T, vocab)
    picked = jnp.take_along_axis(logits, targets.reshape(-1, 1), axis=-1)[:, 0]  # (B*T,)
    return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - picked)
