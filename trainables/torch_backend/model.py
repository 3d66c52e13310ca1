"""A decoder-only transformer LM in PyTorch (nanoGPT-shaped), with every model axis of the spec.

Attention variants:
- full:    causal attention over the whole sequence.
- local:   the sequence is cut into blocks of `window` tokens, causal inside each block; computed as a
           batch of short sequences, so it really saves work (S*W instead of S*S scores per head).
- sliding: each token sees itself and the previous window-1 tokens; a band mask over the dense
           S x S scores, so it costs what full attention costs (that is what a mask-based kernel does).
GQA/MQA: `kv_heads` key/value heads shared by groups of heads // kv_heads query heads.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from trainables.config import TrialConfig

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}


def attention_mask(kind: str, length: int, window: int) -> torch.Tensor:
    """Boolean (length, length) mask, True where query i may attend to key j."""
    i = torch.arange(length).unsqueeze(1)
    j = torch.arange(length).unsqueeze(0)
    allowed = j <= i
    if kind == "sliding":
        allowed &= j > i - window
    return allowed


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: TrialConfig):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = cfg.heads, cfg.kv_heads, cfg.head_dim
        self.attention, self.window, self.backend = cfg.attention, cfg.window, cfg.attn_backend
        self.dropout = cfg.dropout
        # manual attention's two batched matmuls; blas=onednn-fp32 swaps in oneDNN's (torch_backend/onednn_fp32.py)
        self.matmul = torch.matmul
        # one fused projection for q, k and v: one GEMM instead of three
        self.qkv = nn.Linear(cfg.width, (cfg.heads + 2 * cfg.kv_heads) * cfg.head_dim, bias=False)
        self.proj = nn.Linear(cfg.attn_dim, cfg.width, bias=False)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        length = cfg.window if cfg.attention == "local" else cfg.seq_len
        mask_kind = "sliding" if cfg.attention == "sliding" else "causal"
        self.register_buffer("mask", attention_mask(mask_kind, length, cfg.window), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # shapes: B batch, T seq_len, C width, nh heads, nkv kv_heads, hs head_dim; N sequences of L tokens each
        batch, seq, _ = x.shape  # (B, T, C)
        q, k, v = self.qkv(x).split(
            [self.heads * self.head_dim, self.kv_heads * self.head_dim, self.kv_heads * self.head_dim], dim=-1
        )  # (B, T, nh*hs), (B, T, nkv*hs), (B, T, nkv*hs)
        # local attention = a batch of independent blocks of `window` tokens (a free view):
        # N = B*T//window blocks of L = window tokens; otherwise N = B sequences of L = T tokens
        n, length = (batch * seq // self.window, self.window) if self.attention == "local" else (batch, seq)
        q = q.reshape(n, length, self.heads, self.head_dim).transpose(1, 2)  # (N, L, nh, hs) -> (N, nh, L, hs)
        k = k.reshape(n, length, self.kv_heads, self.head_dim).transpose(1, 2)  # (N, L, nkv, hs) -> (N, nkv, L, hs)
        v = v.reshape(n, length, self.kv_heads, self.head_dim).transpose(1, 2)  # (N, L, nkv, hs) -> (N, nkv, L, hs)
        if self.backend == "sdpa":
            y = self._sdpa(q, k, v, length)  # (N, nh, L, hs)
        else:
            y = self._manual(q, k, v, length)  # (N, nh, L, hs)
        # merge heads; for local, the N = B*T//window blocks lie in sequence order, so they merge back to (B, T)
        y = y.transpose(1, 2).reshape(batch, seq, self.heads * self.head_dim)  # (N, L, nh, hs) -> (B, T, nh*hs)
        return self.resid_dropout(self.proj(y))  # (B, T, C)

    def _sdpa(self, q, k, v, length):
        p = self.dropout if self.training else 0.0
        gqa = self.kv_heads != self.heads
        if self.attention == "sliding":
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=self.mask[:length, :length], dropout_p=p, enable_gqa=gqa
            )  # mask (L, L)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p, enable_gqa=gqa)

    def _manual(self, q, k, v, length):
        n, group = q.shape[0], self.heads // self.kv_heads
        # group query heads under their shared kv head: broadcasting instead of copying k and v
        # (query head h = kv head h // group, member h % group; g = group = nh // nkv)
        q = q.reshape(n, self.kv_heads, group, length, self.head_dim)  # (N, nh, L, hs) -> (N, nkv, g, L, hs)
        k, v = k.unsqueeze(2), v.unsqueeze(2)  # (N, nkv, L, hs) -> (N, nkv, 1, L, hs)
        scores = self.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))  # (N, nkv, g, L, L)
        scores = scores.masked_fill(~self.mask[:length, :length], float("-inf"))  # mask (L, L) broadcast
        weights = F.dropout(F.softmax(scores, dim=-1), self.dropout, self.training)  # (N, nkv, g, L, L)
        y = self.matmul(weights, v)  # (N, nkv, g, L, hs)
        return y.reshape(n, self.heads, length, self.head_dim)  # (N, nkv, g, L, hs) -> (N, nh, L, hs)


class MLP(nn.Module):
    def __init__(self, cfg: TrialConfig):
        super().__init__()
        self.up = nn.Linear(cfg.width, cfg.mlp_hidden, bias=False)
        self.act = ACTIVATIONS[cfg.activation]()
        self.down = nn.Linear(cfg.mlp_hidden, cfg.width, bias=False)
        self.dropout = nn.Dropout(cfg.dropout)
        self.up_act = None  # fused_linear_act: up and act as one oneDNN kernel over up's own weight
        if cfg.fused_linear_act:
            from trainables.torch_backend.fused_linear_act import FusedLinearAct

            self.up_act = FusedLinearAct(self.up, cfg.activation)

    def forward(self, x):
        hidden = self.up_act(x) if self.up_act is not None else self.act(self.up(x))
        return self.dropout(self.down(hidden))


class Block(nn.Module):
    def __init__(self, cfg: TrialConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.width)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.width)
        self.mlp = MLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: TrialConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.width)
        self.wpe = nn.Embedding(cfg.seq_len, cfg.width)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.ln_f = nn.LayerNorm(cfg.width)
        self.lm_head = nn.Linear(cfg.width, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying, as in GPT-2
        self.apply(self._init_weights)
        for name, param in self.named_parameters():
            if name.endswith(("proj.weight", "down.weight")):  # GPT-2's scaled init of residual projections
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * cfg.depth))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(idx.shape[1], device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(positions))
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))  # (B, T, vocab_size)
        # the loss in fp32 even for bf16 weights: a bf16 log-softmax over 8k+ classes loses the signal
        return F.cross_entropy(logits.view(-1, logits.shape[-1]).float(), targets.reshape(-1))  # (B*T, vocab), (B*T,)
