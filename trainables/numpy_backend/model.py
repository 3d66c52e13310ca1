"""The decoder-only transformer LM of trainables/torch_backend/model.py in NumPy float32, with a hand-written backward.

Read it side by side with the torch model: the same classes in the same order. Each forward() returns its output and
what its backward() needs; backward() returns the gradient of the input and writes its weights' gradients into a
`Gradients`. Weights keep PyTorch's names and layout (a Linear's weight is (out, in): x @ weight.T hands BLAS the
transpose as a flag, no copy, measured as fast as a pre-transposed copy) as views into one flat buffer, so AdamW is a
few whole-buffer operations (trainer.py). The output projection is `wte` itself (tied), so its gradient is the
sum of the projection's and the embedding's, as in torch.

Attention variants, GQA/MQA and the dropout sites are those of the torch model's manual path. Everything stays float32:
NumPy 2 keeps float32 arrays float32 next to Python floats (NEP 50), and the NumPy scalars here are np.float32.
Dropout draws from a NumPy generator keyed by cfg.seed, so its masks differ from torch's.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erf, expit

from trainables.config import TrialConfig
from trainables.weights import LAYER_NORM_EPS

F32 = np.float32
INV_SQRT2 = F32(1 / math.sqrt(2))
INV_SQRT_2PI = F32(1 / math.sqrt(2 * math.pi))


class GELU:
    """nn.GELU()'s exact erf form, x * Phi(x). Phi is kept for the backward: scipy's erf costs ~15 ns an element
    here (measured), the largest element-wise cost of the step."""

    @staticmethod
    def forward(x):
        cdf = erf(x * INV_SQRT2)
        cdf += 1
        cdf *= F32(0.5)
        return x * cdf, (x, cdf)

    @staticmethod
    def backward(dy, saved):
        x, cdf = saved
        slope = x * x  # d/dx x*Phi(x) = Phi(x) + x * phi(x), phi(x) = exp(-x^2/2) / sqrt(2 pi), as torch's kernel
        slope *= F32(-0.5)
        np.exp(slope, out=slope)
        slope *= x
        slope *= INV_SQRT_2PI
        slope += cdf
        return dy * slope


class ReLU:
    @staticmethod
    def forward(x):
        y = np.maximum(x, F32(0))
        return y, y

    @staticmethod
    def backward(dy, y):
        return dy * (y > 0)


class SiLU:
    @staticmethod
    def forward(x):
        sigmoid = expit(x)
        return x * sigmoid, (x, sigmoid)

    @staticmethod
    def backward(dy, saved):
        x, sigmoid = saved
        slope = 1 - sigmoid  # d/dx x*s(x) = s * (1 + x * (1 - s))
        slope *= x
        slope += 1
        slope *= sigmoid
        return dy * slope


ACTIVATIONS = {"gelu": GELU, "relu": ReLU, "silu": SiLU}


def attention_mask(kind: str, length: int, window: int) -> np.ndarray:
    """Boolean (length, length) mask, True where query i may attend to key j."""
    i = np.arange(length)[:, None]
    j = np.arange(length)[None, :]
    allowed = j <= i
    if kind == "sliding":
        allowed &= j > i - window
    return allowed


# ---- the building blocks torch takes from nn and F --------------------------------------------------------------
class FlatParameters:
    """Named float32 arrays in PyTorch's names, shapes and layout, each a view into one flat buffer."""

    def __init__(self, shapes: dict[str, tuple[int, ...]]):
        self.flat = np.zeros(sum(math.prod(shape) for shape in shapes.values()), F32)
        self.views, offset = {}, 0
        for name, shape in shapes.items():
            size = math.prod(shape)
            self.views[name] = self.flat[offset : offset + size].reshape(shape)
            offset += size

    def __getitem__(self, name: str) -> np.ndarray:
        return self.views[name]


class Gradients(FlatParameters):
    """One gradient per weight. While `accumulate` is False (a step's first micro-batch) results are written straight
    into the buffer (a matmul with out=, no temporary); later micro-batches add theirs: grad_accum sums."""

    accumulate = False

    def matmul(self, name: str, a: np.ndarray, b: np.ndarray) -> None:
        if self.accumulate:
            target = self[name]
            target += a @ b
        else:
            np.matmul(a, b, out=self[name])

    def sum(self, name: str, values: np.ndarray) -> None:
        """Sum `values` over its leading axes, down to the gradient's shape."""
        target = self[name]
        values = values.reshape(-1, *target.shape)  # (B, T, C) -> (B*T, C) for a LayerNorm, (B, T, C) for wpe
        if self.accumulate:
            target += values.sum(axis=0)
        else:
            np.sum(values, axis=0, out=target)


def linear_backward(dy, x, weight, grads: Gradients, name: str):
    """y = x @ weight.T for 2-D x: writes dweight = dy.T @ x, returns dx = dy @ weight."""
    grads.matmul(name, dy.T, x)  # (out, M) @ (M, in) -> (out, in)
    return dy @ weight  # (M, out) @ (out, in) -> (M, in)


class LayerNorm:
    def __init__(self, params: FlatParameters, prefix: str):
        self.names = (prefix + "weight", prefix + "bias")
        self.weight, self.bias = (params[name] for name in self.names)

    def forward(self, x):
        mean = x.mean(axis=-1, keepdims=True)
        centred = x - mean
        variance = np.square(centred).mean(axis=-1, keepdims=True)  # biased, as torch's
        inv_std = 1 / np.sqrt(variance + F32(LAYER_NORM_EPS))
        normed = centred * inv_std
        return normed * self.weight + self.bias, (normed, inv_std)

    def backward(self, dy, saved, grads: Gradients):
        normed, inv_std = saved
        grads.sum(self.names[0], dy * normed)
        grads.sum(self.names[1], dy)
        dnormed = dy * self.weight
        # dx = (dnormed - mean(dnormed) - normed * mean(dnormed * normed)) / std
        dx = dnormed - dnormed.mean(axis=-1, keepdims=True)
        dx -= normed * (dnormed * normed).mean(axis=-1, keepdims=True)
        dx *= inv_std
        return dx


def dropout(x, rate: float, rng: np.random.Generator):
    """Inverted dropout as nn.Dropout in training mode: (x * mask, mask), mask = keep / (1 - rate); mask None
    when the rate is 0, so no random numbers are drawn at all."""
    if rate == 0.0:
        return x, None
    mask = (rng.random(x.shape, dtype=F32) >= F32(rate)) * F32(1 / (1 - rate))
    return x * mask, mask


def dropout_backward(dy, mask):
    return dy if mask is None else dy * mask


def softmax_(scores):
    """Softmax over the last axis, in place."""
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    return scores


def softmax_backward_(dprobs, probs):
    """dscores = probs * (dprobs - sum(dprobs * probs)), in place into dprobs; masked scores (probs 0) get 0."""
    dprobs *= probs
    dprobs -= probs * dprobs.sum(axis=-1, keepdims=True)
    return dprobs


# ---- the model -------------------------------------------------------------------------------------------------
class CausalSelfAttention:
    def __init__(self, cfg: TrialConfig, params: FlatParameters, prefix: str):
        self.heads, self.kv_heads, self.head_dim = cfg.heads, cfg.kv_heads, cfg.head_dim
        self.attention, self.window = cfg.attention, cfg.window
        self.dropout = cfg.dropout
        self.qkv_name, self.proj_name = prefix + "qkv.weight", prefix + "proj.weight"
        self.qkv, self.proj = params[self.qkv_name], params[self.proj_name]  # q | k | v stacked, (out, in)
        length = cfg.window if cfg.attention == "local" else cfg.seq_len
        mask_kind = "sliding" if cfg.attention == "sliding" else "causal"
        # added to the scores: 0 where allowed, -inf elsewhere (masked_fill's result in one in-place add)
        allowed = attention_mask(mask_kind, length, cfg.window)
        self.mask = np.where(allowed, F32(0), F32(-np.inf)).astype(F32)  # (L, L)
        self.scale = F32(1 / math.sqrt(self.head_dim))

    def forward(self, x, rng):
        # shapes: B batch, T seq_len, C width, nh heads, nkv kv_heads, hs head_dim, g = nh // nkv; N sequences of L
        batch, seq, width = x.shape  # (B, T, C)
        heads, kv_heads, head_dim = self.heads, self.kv_heads, self.head_dim
        group = heads // kv_heads
        x2d = x.reshape(batch * seq, width)  # (B*T, C)
        qkv = x2d @ self.qkv.T  # (B*T, (nh+2*nkv)*hs)
        # local attention = a batch of independent blocks of `window` tokens (a free view):
        # N = B*T//window blocks of L = window tokens; otherwise N = B sequences of L = T tokens
        n, length = (batch * seq // self.window, self.window) if self.attention == "local" else (batch, seq)
        qkv = qkv.reshape(n, length, heads + 2 * kv_heads, head_dim)  # (B*T, (nh+2*nkv)*hs) -> (N, L, nh+2*nkv, hs)
        # heads first, as contiguous copies: then a kv head's g query heads (query head h = kv head h // g) stack into
        # one (g*L, hs) matrix, so each kv head is one GEMM against its k and v (torch broadcasts instead)
        q = np.ascontiguousarray(qkv[:, :, :heads].transpose(0, 2, 1, 3))  # (N, L, nh, hs) -> (N, nh, L, hs)
        q = q.reshape(n, kv_heads, group * length, head_dim)  # (N, nh, L, hs) -> (N, nkv, g*L, hs)
        k = np.ascontiguousarray(qkv[:, :, heads : heads + kv_heads].transpose(0, 2, 1, 3))  # (N, nkv, L, hs)
        v = np.ascontiguousarray(qkv[:, :, heads + kv_heads :].transpose(0, 2, 1, 3))  # (N, nkv, L, hs)
        scores = q @ k.transpose(0, 1, 3, 2)  # (N, nkv, g*L, hs) @ (N, nkv, hs, L) -> (N, nkv, g*L, L)
        scores *= self.scale
        scores.reshape(n, kv_heads, group, length, length)[...] += self.mask  # (N, nkv, g, L, L), mask (L, L)
        probs = softmax_(scores)  # (N, nkv, g*L, L)
        weights, weights_mask = dropout(probs, self.dropout, rng)  # (N, nkv, g*L, L)
        y = weights @ v  # (N, nkv, g*L, L) @ (N, nkv, L, hs) -> (N, nkv, g*L, hs)
        # merge heads; for local, the N = B*T//window blocks lie in sequence order, so they merge back to (B, T)
        y = y.reshape(n, heads, length, head_dim).transpose(0, 2, 1, 3)  # (N, nh, L, hs) -> (N, L, nh, hs)
        y = y.reshape(batch * seq, heads * head_dim)  # (N, L, nh, hs) -> (B*T, nh*hs)
        out, out_mask = dropout((y @ self.proj.T).reshape(batch, seq, width), self.dropout, rng)  # (B, T, C)
        return out, (x2d, q, k, v, probs, weights_mask, weights, y, out_mask)

    def backward(self, dout, saved, grads: Gradients):
        x2d, q, k, v, probs, weights_mask, weights, y, out_mask = saved
        n, kv_heads, group_length, head_dim = q.shape  # (N, nkv, g*L, hs)
        heads, length = self.heads, k.shape[2]
        batch, seq, width = dout.shape  # (B, T, C)
        dout = dropout_backward(dout, out_mask).reshape(batch * seq, width)  # (B, T, C) -> (B*T, C)
        dy = linear_backward(dout, y, self.proj, grads, self.proj_name)  # (B*T, nh*hs)
        dy = dy.reshape(n, length, heads, head_dim).transpose(0, 2, 1, 3)  # (B*T, nh*hs) -> (N, nh, L, hs)
        dy = np.ascontiguousarray(dy).reshape(n, kv_heads, group_length, head_dim)  # (N, nkv, g*L, hs)
        # a kv head's gradient sums over its group: the g*L rows are the contraction of one GEMM
        dv = weights.transpose(0, 1, 3, 2) @ dy  # (N, nkv, L, g*L) @ (N, nkv, g*L, hs) -> (N, nkv, L, hs)
        dweights = dy @ v.transpose(0, 1, 3, 2)  # (N, nkv, g*L, hs) @ (N, nkv, hs, L) -> (N, nkv, g*L, L)
        dscores = softmax_backward_(dropout_backward(dweights, weights_mask), probs)  # (N, nkv, g*L, L)
        dscores *= self.scale
        dq = dscores @ k  # (N, nkv, g*L, L) @ (N, nkv, L, hs) -> (N, nkv, g*L, hs)
        dk = dscores.transpose(0, 1, 3, 2) @ q  # (N, nkv, L, g*L) @ (N, nkv, g*L, hs) -> (N, nkv, L, hs)
        dqkv = np.empty((n, length, heads + 2 * kv_heads, head_dim), F32)  # (N, L, nh+2*nkv, hs): q | k | v
        dqkv[:, :, :heads] = dq.reshape(n, heads, length, head_dim).transpose(0, 2, 1, 3)  # -> (N, L, nh, hs)
        dqkv[:, :, heads : heads + kv_heads] = dk.transpose(0, 2, 1, 3)  # (N, nkv, L, hs) -> (N, L, nkv, hs)
        dqkv[:, :, heads + kv_heads :] = dv.transpose(0, 2, 1, 3)  # (N, nkv, L, hs) -> (N, L, nkv, hs)
        dqkv = dqkv.reshape(batch * seq, -1)  # (N, L, nh+2*nkv, hs) -> (B*T, (nh+2*nkv)*hs)
        dx = linear_backward(dqkv, x2d, self.qkv, grads, self.qkv_name)  # (B*T, C)
        return dx.reshape(batch, seq, width)  # (B, T, C)


class MLP:
    def __init__(self, cfg: TrialConfig, params: FlatParameters, prefix: str):
        self.up_name, self.down_name = prefix + "up.weight", prefix + "down.weight"
        self.up, self.down = params[self.up_name], params[self.down_name]
        self.act = ACTIVATIONS[cfg.activation]
        self.dropout = cfg.dropout

    def forward(self, x, rng):
        batch, seq, width = x.shape  # (B, T, C)
        x2d = x.reshape(batch * seq, width)  # (B, T, C) -> (B*T, C)
        hidden, act_saved = self.act.forward(x2d @ self.up.T)  # (B*T, hidden)
        out, out_mask = dropout((hidden @ self.down.T).reshape(batch, seq, width), self.dropout, rng)  # (B, T, C)
        return out, (x2d, hidden, act_saved, out_mask)

    def backward(self, dout, saved, grads: Gradients):
        x2d, hidden, act_saved, out_mask = saved
        batch, seq, width = dout.shape  # (B, T, C)
        dout = dropout_backward(dout, out_mask).reshape(batch * seq, width)  # (B, T, C) -> (B*T, C)
        dhidden = self.act.backward(linear_backward(dout, hidden, self.down, grads, self.down_name), act_saved)
        return linear_backward(dhidden, x2d, self.up, grads, self.up_name).reshape(batch, seq, width)  # (B, T, C)


class Block:
    def __init__(self, cfg: TrialConfig, params: FlatParameters, prefix: str):
        self.ln_1 = LayerNorm(params, prefix + "ln_1.")
        self.attn = CausalSelfAttention(cfg, params, prefix + "attn.")
        self.ln_2 = LayerNorm(params, prefix + "ln_2.")
        self.mlp = MLP(cfg, params, prefix + "mlp.")

    def forward(self, x, rng):
        normed_1, ln_1_saved = self.ln_1.forward(x)
        attn_out, attn_saved = self.attn.forward(normed_1, rng)
        x = x + attn_out
        normed_2, ln_2_saved = self.ln_2.forward(x)
        mlp_out, mlp_saved = self.mlp.forward(normed_2, rng)
        return x + mlp_out, (ln_1_saved, attn_saved, ln_2_saved, mlp_saved)

    def backward(self, dx, saved, grads: Gradients):
        ln_1_saved, attn_saved, ln_2_saved, mlp_saved = saved
        dx = dx + self.ln_2.backward(self.mlp.backward(dx, mlp_saved, grads), ln_2_saved, grads)
        return dx + self.ln_1.backward(self.attn.backward(dx, attn_saved, grads), ln_1_saved, grads)


class GPT:
    def __init__(self, cfg: TrialConfig, params: FlatParameters):
        self.cfg = cfg
        self.wte, self.wpe = params["wte.weight"], params["wpe.weight"]
        self.dropout = cfg.dropout
        self.blocks = [Block(cfg, params, f"blocks.{layer}.") for layer in range(cfg.depth)]
        self.ln_f = LayerNorm(params, "ln_f.")
        # lm_head is wte itself (weight tying, as in GPT-2): logits = x @ wte.T
        self.logits = np.empty((0, cfg.vocab_size), F32)  # reused between steps: the largest activation

    def forward(self, idx, targets, rng):
        """(mean cross-entropy as np.float32, what backward needs)."""
        batch, seq = idx.shape  # (B, T)
        if seq != self.cfg.seq_len:  # wpe's gradient is written whole
            raise ValueError(f"a batch of {seq} tokens per row; this model trains on seq_len={self.cfg.seq_len}")
        x, drop_mask = dropout(self.wte[idx] + self.wpe, self.dropout, rng)  # (B, T, C)
        blocks_saved = []
        for block in self.blocks:
            x, saved = block.forward(x, rng)
            blocks_saved.append(saved)
        normed, ln_f_saved = self.ln_f.forward(x)
        normed = normed.reshape(batch * seq, -1)  # (B, T, C) -> (B*T, C)
        if self.logits.shape[0] != batch * seq:
            self.logits = np.empty((batch * seq, self.cfg.vocab_size), F32)
        logits = np.matmul(normed, self.wte.T, out=self.logits)  # (B*T, vocab_size)
        loss, probs = cross_entropy_(logits, targets.reshape(-1))  # (B*T, vocab), (B*T,)
        return loss, (idx, targets.reshape(-1), drop_mask, blocks_saved, ln_f_saved, normed, probs)

    def backward(self, saved, grads: Gradients, loss_scale: float) -> None:
        """Writes (or adds, grads.accumulate) the gradient of loss_scale * mean cross-entropy for every weight."""
        idx, targets, drop_mask, blocks_saved, ln_f_saved, normed, probs = saved
        batch, seq = idx.shape  # (B, T)
        dlogits = probs  # d(mean cross-entropy)/d logits = (softmax - one_hot) / count, in place
        dlogits[np.arange(targets.size), targets] -= 1
        dlogits *= F32(loss_scale / targets.size)
        grads.matmul("wte.weight", dlogits.T, normed)  # the output projection's part: (vocab, B*T) @ (B*T, C)
        dx = (dlogits @ self.wte).reshape(batch, seq, -1)  # (B*T, vocab) @ (vocab, C) -> (B, T, C)
        dx = self.ln_f.backward(dx, ln_f_saved, grads)
        for block, saved_block in zip(reversed(self.blocks), reversed(blocks_saved), strict=True):
            dx = block.backward(dx, saved_block, grads)
        dx = dropout_backward(dx, drop_mask)  # (B, T, C)
        grads.sum("wpe.weight", dx)  # (B, T, C) summed over B -> (T, C)
        # the embedding's part, added to the projection's. np.add.at has a fast path in NumPy 2 (measured here for
        # vocab 8192, width 256: 0.56 ms at 256 tokens, 10 ms at 4096, as fast as sorting + np.add.reduceat and far
        # faster than a bincount per column)
        np.add.at(grads["wte.weight"], idx.reshape(-1), dx.reshape(batch * seq, -1))  # (B*T,), (B*T, C)


def cross_entropy_(logits, targets):
    """(mean cross-entropy, softmax) from a stable log-softmax; the softmax overwrites `logits`."""
    logits -= logits.max(axis=1, keepdims=True)
    target_logits = logits[np.arange(targets.size), targets]  # (B*T,)
    np.exp(logits, out=logits)
    totals = logits.sum(axis=1, keepdims=True)  # (B*T, 1)
    loss = (np.log(totals[:, 0]) - target_logits).mean()  # -log softmax at the target, averaged
    logits /= totals
    return loss, logits
