"""GQA/MQA, local and sliding attention against a brute-force loop over the keys each query may see."""

import math

import pytest
import torch

from trainables.config import build_config
from trainables.torch_backend.model import CausalSelfAttention


def visible(kind: str, i: int, j: int, window: int) -> bool:
    if j > i:
        return False
    if kind == "sliding":
        return i - j < window
    if kind == "local":
        return i // window == j // window
    return True


def brute_force(module: CausalSelfAttention, x: torch.Tensor, kind: str, window: int) -> torch.Tensor:
    heads, kv_heads, hd = module.heads, module.kv_heads, module.head_dim
    q, k, v = module.qkv(x).split([heads * hd, kv_heads * hd, kv_heads * hd], dim=-1)
    batch, seq, _ = x.shape
    out = torch.zeros(batch, seq, heads * hd, dtype=torch.float64)
    for b in range(batch):
        for h in range(heads):
            g = h // (heads // kv_heads)  # the kv head this query head shares
            qh = q[b, :, h * hd : (h + 1) * hd].double()
            kh = k[b, :, g * hd : (g + 1) * hd].double()
            vh = v[b, :, g * hd : (g + 1) * hd].double()
            for i in range(seq):
                keys = [j for j in range(seq) if visible(kind, i, j, window)]
                scores = torch.stack([qh[i] @ kh[j] for j in keys]) / math.sqrt(hd)
                weights = torch.softmax(scores, dim=0)
                out[b, i, h * hd : (h + 1) * hd] = sum(w * vh[j] for w, j in zip(weights, keys, strict=True))
    return module.proj(out.float())


@pytest.mark.parametrize("backend", ["manual", "sdpa"])
@pytest.mark.parametrize(
    "attention, heads, kv_heads",
    [("full", 4, 4), ("full", 4, 2), ("full", 4, 1), ("local", 4, 2), ("sliding", 4, 4), ("sliding", 4, 1)],
)
def test_attention_matches_brute_force(backend, attention, heads, kv_heads):
    cfg = build_config(
        dict(
            width=32,
            heads=heads,
            kv_heads=kv_heads,
            head_dim=8,
            seq_len=12,
            window=4,
            attention=attention,
            attn_backend=backend,
        )
    )
    torch.manual_seed(1)
    module = CausalSelfAttention(cfg).eval()
    x = torch.randn(2, cfg.seq_len, cfg.width)
    with torch.no_grad():
        got = module(x)
        want = brute_force(module, x, attention, cfg.window)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


def test_sliding_window_differs_from_full_causal():
    torch.manual_seed(1)
    cfg = build_config(dict(width=32, heads=4, seq_len=12, window=4, attention="sliding"))
    module = CausalSelfAttention(cfg).eval()
    full = CausalSelfAttention(cfg.replace(attention="full")).eval()
    full.load_state_dict(module.state_dict())
    x = torch.randn(1, 12, 32)
    with torch.no_grad():
        a, b = module(x), full(x)
    torch.testing.assert_close(a[:, :4], b[:, :4])  # the first window sees the same keys
    assert (a[:, 4:] - b[:, 4:]).abs().max() > 1e-3  # later tokens see fewer
