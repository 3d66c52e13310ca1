"""What autograd saves for backward in one training step, from the config alone: the activations of the memory
estimate (trainables/memory.py), pure arithmetic, importable without torch or jax.

Derived op by op on the torch model (trainables/torch_backend/model.py; the block's derivation is in
_block_activation_bytes) and checked tensor by tensor against torch.autograd.graph.saved_tensors_hooks in
tests/test_memory.py. The jax and NumPy trainers keep their own buffers: the same arithmetic is used for them (the
benchmark benchmarks/memory_estimate.py reports how close that is).
"""

from __future__ import annotations

import math

from trainables.trainer import framework_support
from trainables.weights import parameter_shapes

QUANTIZED = ("q8", "q4", "bitnet")
Q4_GROUP_SIZE = 32  # trainables/torch_backend/support.py Q4_GROUP_SIZE (the core imports no framework package)
FP32, BF16, INT64 = 4, 2, 8


def shapes(cfg) -> dict:
    """The config's shapes, autos resolved as trainables/validation.validate resolves them."""
    head_dim = cfg.head_dim if cfg.head_dim is not None else cfg.width // cfg.heads
    kv_heads = cfg.kv_heads if cfg.kv_heads is not None else cfg.heads
    backend = cfg.attn_backend or framework_support(cfg.framework).auto("attn_backend")
    local = cfg.attention == "local"
    length = cfg.window if local else cfg.seq_len  # tokens per attention call
    calls = cfg.batch_size * cfg.seq_len // cfg.window if local else cfg.batch_size  # sequences per attention call
    return {
        "B": cfg.batch_size,
        "T": cfg.seq_len,
        "C": cfg.width,
        "H": int(round(cfg.mlp_ratio * cfg.width)),  # cfg.mlp_hidden
        "A": cfg.heads * head_dim,  # cfg.attn_dim
        "K": kv_heads * head_dim,  # cfg.kv_dim
        "V": cfg.vocab_size,
        "nh": cfg.heads,
        "L": length,
        "N": calls,
        "backend": backend,
    }


def parameter_counts(cfg) -> dict[str, int]:
    """Parameter counts: total, per block, frozen, trainable, and the blocks' Linear weights (what QAT converts)."""
    shapes = parameter_shapes(cfg)
    total = sum(math.prod(shape) for shape in shapes.values())
    block = sum(math.prod(shape) for name, shape in shapes.items() if name.startswith("blocks.0."))
    block_linear = sum(
        math.prod(shape) for name, shape in shapes.items() if name.startswith("blocks.0.") and len(shape) == 2
    )
    frozen = cfg.freeze_layers * block
    return {
        "total": total,
        "block": block,
        "block_linear": block_linear,
        "frozen": frozen,
        "trainable": total - frozen,
        "wte": math.prod(shapes["wte.weight"]),
    }


def element_bytes(cfg) -> dict[str, int]:
    """Bytes per element of each kind of tensor, by precision (measured dtypes of the saved tensors, torch 2.13)."""
    bf16 = cfg.precision == "bf16"
    low = cfg.precision in ("bf16", "mixed")
    return {
        "param": BF16 if bf16 else FP32,  # weights, gradients, optimizer state
        "resid": BF16 if bf16 else FP32,  # the residual stream: mixed adds bf16 branch outputs to an fp32 stream
        "matmul": BF16 if low else FP32,  # Linear inputs/outputs, attention q/k/v/out, the MLP's activations
        "stats": BF16 if bf16 else FP32,  # LayerNorm mean and rstd (fp32 under autocast: layer_norm runs in fp32)
    }


def _block_activation_bytes(cfg, trainable: bool) -> int:
    """Bytes autograd saves in one transformer block for one micro-batch.

    B batch, T seq_len, C width, H mlp_hidden, A = heads*head_dim, K = kv_heads*head_dim, nh heads; attention runs on
    N sequences of L tokens (local: N = B*T/window, L = window; else N = B, L = T). Block (torch model's Block):
        x  -> ln_1: saves its input x (B,T,C) and mean, rstd (B,T)      -> h1
        h1 -> qkv Linear: saves h1 (B,T,C) (only if its weight trains)  -> qkv (B,T,A+2K); q, k, v are views of it
        sdpa (CPU flash kernel): saves q, k, v (the qkv storage), out (B,T,A) and logsumexp (N,nh,L) fp32;
             not the L x L scores. out is laid out (B,L,nh,hs), so merging heads is a view: the proj Linear's saved
             input is out's storage again.
        manual: q @ k^T reshapes q, and k, v broadcast to every query head, into contiguous copies: q, k^T, v of
             B*T*A each (K = A's worth even with fewer kv_heads) instead of the qkv output; softmax saves its output
             (N,nh,L,L); the scale saves nothing, masked_fill saves ~mask, a new bool (L,L) each forward; merging
             heads copies (B,T,A) for proj.
        dropout > 0: sdpa falls back to the math path (manual's tensors); softmax output, dropout's noise and the
             dropped probabilities are saved: 3 x (N,nh,L,L); each residual dropout saves its noise (B,T,C).
        proj Linear -> + x (adds save nothing)                           -> x2
        x2 -> ln_2: saves x2 and mean, rstd                              -> h2
        h2 -> up Linear: saves h2 (if its weight trains)                 -> u (B,T,H)
        u  -> gelu/silu: saves u (relu saves its output g instead, which down saves anyway) -> g
        g  -> down Linear: saves g (if its weight trains)                -> + x2 -> next block's x
    fp32 sdpa per block: 4*B*T*C + B*T*(A+2K) + B*T*A + 2*B*T*H elements + logsumexp + 4*B*T stats.
    mixed (autocast): x, x2 and stats fp32 (layer_norm runs in fp32), every Linear input a bf16 copy, qkv/out/u/g bf16.
    Frozen block (requires_grad=False): h1, h2, manual's merged out, and g (unless relu saves it) are not saved, but
    the rest is: gradients still flow through it to the trainable embeddings below.
    """
    d, e = shapes(cfg), element_bytes(cfg)
    B, T, C, H, A, K = d["B"], d["T"], d["C"], d["H"], d["A"], d["K"]
    N, L, nh = d["N"], d["L"], d["nh"]
    bt = B * T
    dropout = cfg.dropout > 0
    math_path = d["backend"] == "manual" or dropout
    relu = cfg.activation == "relu"
    fused = cfg.fused_linear_act and cfg.precision not in QUANTIZED

    saved = 2 * bt * C * e["resid"] + 4 * bt * e["stats"]  # ln_1 and ln_2 inputs (x, x2), their mean and rstd
    if trainable:
        saved += 2 * bt * C * e["matmul"]  # h1, h2: the qkv and up Linears' inputs
    # attention
    scores = N * nh * L * L  # (N, nh, L, L) elements
    if math_path:
        inner = _attention_math_bytes(cfg)
        saved += 3 * bt * A * inner  # the q, k^T and v copies the batched matmuls save
        saved += (3 if dropout else 1) * scores * inner  # softmax output (+ dropout noise and output)
        if d["backend"] == "manual":
            saved += L * L  # masked_fill saves ~mask: a new bool (L, L) each forward
        if trainable:
            saved += bt * A * e["matmul"]  # merged heads: a copy, saved by proj
    else:
        saved += bt * (A + 2 * K) * e["matmul"]  # q, k, v: views of the qkv output
        saved += bt * A * e["matmul"]  # out (also proj's input)
        saved += N * nh * L * FP32  # logsumexp
        if cfg.attention == "sliding":
            saved += T * T * e["matmul"]  # the bool band mask, converted to an additive float mask
    if dropout:
        saved += 2 * bt * C * e["matmul"]  # residual dropouts' noise (attention and MLP branches)
    # MLP
    if fused:
        # torch_backend/fused_linear_act.LinearActFunction saves (x, W, y) for relu, (x, W, b) otherwise, even when
        # frozen: h2 when the block is frozen (counted above when it trains), and relu's output y (= down's input)
        saved += (0 if trainable else bt * C * e["matmul"]) + (bt * H * e["matmul"] if relu or trainable else 0)
    else:
        # trainable: u and g (relu: g only); frozen: u (gelu/silu's input) or g (relu's output), not down's input
        saved += bt * H * e["matmul"] * (2 if trainable and not relu else 1)
    saved += _quantized_block_bytes(cfg, d, trainable)
    return saved


def _attention_math_bytes(cfg) -> int:
    """Element bytes of attention's q/k/v copies and scores on the math path: manual runs in the matmul dtype; sdpa
    with dropout falls back to torch's math kernel, which upcasts bf16 to fp32 on CPU (measured: fp32 copies and
    scores under autocast)."""
    if shapes(cfg)["backend"] == "manual":
        return element_bytes(cfg)["matmul"]
    return FP32


def _quantized_block_bytes(cfg, d: dict, trainable: bool) -> int:
    """What torchao's QAT adds to (q8, q4) or changes in (bitnet) one block's saved tensors, against the same block in
    fp32; measured tensor by tensor on depth 2-3 width 64 with saved_tensors_hooks (tests/test_memory.py checks it).
    q8/q4 (FakeQuantizedLinear): each of the 4 Linears saves its fake-quantised fp32 input and per-token scale and zero
    point; a trainable one also saves two fp32 weight-sized tensors (the fake-quantised weight and the quantiser's own)
    and the weight's scales and zero points (q8: per output channel; q4: per group of 32), a frozen one only the
    fake-quantised weight. With sdpa, out is saved apart from proj's (fake-quantised) input.
    bitnet: the Linears save int8 weights and int8 inputs (1 byte each), per-row fp32 activation scales and a
    per-tensor weight scale, frozen or not, and not their fp32 inputs (h1, h2, g; manual's merged heads)."""
    if cfg.precision not in QUANTIZED:
        return 0
    B, T, C, H, A, K = d["B"], d["T"], d["C"], d["H"], d["A"], d["K"]
    bt = B * T
    linear = (A + 2 * K) * C + C * A + H * C + C * H  # qkv, proj, up, down weights of one block
    inputs = bt * (C + A + C + H)  # what the 4 Linears read: h1, out, h2, g
    math_path = d["backend"] == "manual" or cfg.dropout > 0
    if cfg.precision == "bitnet":
        extra = linear + inputs + 4 * bt * FP32 + 4 * FP32
        if trainable:  # the fp32 Linear inputs the fp32 block saves and bitnet does not
            extra -= bt * (2 * C + H) * FP32 + (bt * A * FP32 if math_path else 0)
        return extra
    per_token = 2 * 4 * bt * FP32
    if not trainable:
        return linear * FP32 + inputs * FP32 + per_token
    rows = (A + 2 * K) + C + H + C  # output channels of the 4 Linears
    scales = 2 * rows * FP32 if cfg.precision == "q8" else 2 * (linear // Q4_GROUP_SIZE) * FP32
    unshared = 0 if math_path else bt * A * FP32
    return 2 * linear * FP32 + inputs * FP32 + unshared + per_token + scales


def qat_saved_bytes(cfg) -> int:
    """What q8/q4/bitnet add to the saved tensors of all blocks, against fp32."""
    d = shapes(cfg)
    frozen = cfg.freeze_layers
    return frozen * _quantized_block_bytes(cfg, d, False) + (cfg.depth - frozen) * _quantized_block_bytes(cfg, d, True)


def saved_activation_bytes(cfg) -> int:
    """Bytes autograd saves for backward over one micro-batch (tensors that are not parameters or buffers)."""
    d, e = shapes(cfg), element_bytes(cfg)
    B, T, C, V = d["B"], d["T"], d["C"], d["V"]
    bt = B * T
    frozen = cfg.freeze_layers
    total = frozen * _block_activation_bytes(cfg, trainable=False)
    total += (cfg.depth - frozen) * _block_activation_bytes(cfg, trainable=True)
    # head: ln_f saves its input and stats; lm_head saves ln_f's output (mixed: its bf16 copy); the logits are not
    # saved, but log_softmax's output is, in fp32 (the model calls .float() before cross_entropy)
    total += bt * C * e["resid"] + 2 * bt * e["stats"] + bt * C * e["matmul"]
    total += bt * V * FP32
    total += 2 * bt * INT64 + T * INT64  # token ids (wte), targets (nll_loss), positions (wpe)
    total += FP32  # nll_loss's total_weight scalar
    if cfg.dropout > 0:
        total += bt * C * e["resid"]  # the embedding dropout's noise
    if cfg.precision == "mixed":
        # autocast casts every Linear weight to bf16 once per forward; the copies are saved for backward:
        # the blocks' Linears and the tied wte/lm_head
        counts = parameter_counts(cfg)
        total += (cfg.depth * counts["block_linear"] + counts["wte"]) * BF16
    return total


def activation_bytes(cfg) -> int:
    """Saved-for-backward bytes of one micro-batch plus the transient tensors alive at the peak."""
    d = shapes(cfg)
    bt, V = d["B"] * d["T"], d["V"]
    total = saved_activation_bytes(cfg)
    # transients at the peak: at the start of backward the gradient of the log-probabilities and of the logits
    # (2 x B*T*V fp32) exist beside the saved log-probabilities (in the forward: the logits themselves, and for
    # bf16/mixed their fp32 copy); manual attention materialises the scores and masked scores of one layer (2 x
    # (N,nh,L,L)) before softmax, and their gradients in backward
    total += 2 * bt * V * FP32
    if d["backend"] == "manual" or cfg.dropout > 0:
        total += 2 * d["N"] * d["nh"] * d["L"] ** 2 * _attention_math_bytes(cfg)
    return total
