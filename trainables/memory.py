"""How much memory a trial needs to train, from its config alone: pure arithmetic, importable without torch.

A config this node cannot hold becomes an `unsupported` row with the memory it would need
(`memory_unsupported_reason`) instead of a worker the kernel OOM-kills or the launcher's memory cap kills half-way.

The estimate is the peak resident memory (RSS) of the trial's worker process, the figure its row records as
`peak_rss_mb` (`ru_maxrss`, MiB), as the sum of:

- weights:          every parameter of trainables/weights.parameter_shapes (wte tied to lm_head, counted once) in the
                    dtype the trainer keeps them: 2 bytes for precision=bf16 (the model is cast), else 4 (fp32, mixed:
                    autocast keeps fp32 weights; q8/q4/bitnet: torchao QAT keeps fp32 master weights).
- gradients:        one per trainable parameter, in the parameter's dtype. freeze_layers=N: the first N blocks have
                    requires_grad=False (trainables/optimizers.freeze_layers), so no gradient. grad_accum > 1 counts
                    a second copy: from the second micro-batch on, autograd makes each new gradient beside the
                    accumulated one and adds it in; those freed gradient-sized blocks stay resident between the saved
                    activations (measured: depth 6 width 512 batch 4 peaked 105 MiB, 1.2 gradient copies, higher with
                    grad_accum=2 than with 1; per-phase HWM resets put the growth in the second micro-batch).
- optimizer_state:  per trainable parameter, in the parameter's dtype (torch makes exp_avg, exp_avg_sq and the momentum
                    buffer with zeros_like(param): bf16 for bf16 parameters; measured, torch 2.13):
                    adamw 2 (exp_avg, exp_avg_sq); sgd 1 (momentum 0.9); lookahead 3 (AdamW's 2 + the slow weights);
                    lamb 2 (exp_avg, exp_avg_sq). Step counters (one fp32 scalar per tensor) are left out.
- optimizer_transient: lamb only: pytorch_optimizer's foreach step makes update temporaries, measured in-process
                    with HWM resets around step() at 0.70-0.80 of one weight copy (model=small, fp32 and bf16; counted
                    as 1). They exist only inside step(), after backward has freed the activations, so they count
                    against the activations, not beside them (measured: lamb peaked 4% below adamw at depth 6 width 512
                    batch 4, where activations are 3x a weight copy).
- activations:      what autograd saves for backward over one micro-batch (derived op by op below, and checked tensor by
                    tensor against torch.autograd.graph.saved_tensors_hooks in tests/test_memory.py), plus the
                    transient tensors alive at the peak (the cross-entropy's gradients, one layer's attention scores).
- buffers:          the attention masks (bool, L x L per block).
- allocator_slack:  what glibc malloc (allocator=default, framework=torch) keeps resident beyond that sum (below);
                    0 with jemalloc or tcmalloc.
- runtime:          the worker's own footprint with a near-empty model: interpreter, torch and the libraries it loads,
                    OpenMP/MKL pools, the token stream; measured (RUNTIME_BYTES).

    total = runtime + max(weights + buffers + gradients + optimizer_state + max(activations, optimizer_transient)
                          + allocator_slack, build_peak)

build_peak is the moment the trainer builds the model: torch's fp32 parameters plus the NumPy fp32 initial weights
copied into them (trainables/weights.initial_weights), 2 x 4 bytes per parameter; it wins only when little trains
(bf16 with SGD, most blocks frozen).

Why a sum, when autograd frees the activations while it makes the gradients and the live-tensor peak is lower:
RSS does not fall back between phases. Measured on model=medium batch 1, in-process with VmHWM reset per phase: with
MALLOC_MMAP_THRESHOLD_=65536 (freed blocks go back to the kernel, so RSS follows the live tensors) the peak was
weights + optimizer state + gradients + ~0.1 GiB; with the default glibc, 0.54 GiB more; through the worker, jemalloc
and tcmalloc peaked at 0.96 of the sum below and glibc at 1.06. So the sum is what a caching allocator keeps, and
glibc keeps more again:
- glibc's heap (after the first frees raise its mmap threshold up to 32 MiB, nearly every tensor of these models is
  served from the heap): zero_grad frees the gradients, the next forward's activations are placed in those holes and
  split them, and the next backward's gradients mostly land in fresh memory. The peak then holds max(activations,
  about 0.8 x gradients) beside the gradients: measured excess over weights + optimizer state + gradients at batch 1,
  as a share of the gradients, 0.58-0.84 (model=small), 0.62 (medium), 0.78 (large); GLIBC_GRADIENT_HOLES = 0.8.
  Measured only where every tensor is under 32 MiB; from xl on, the MLP weights' gradients are larger, glibc mmaps
  them and unmaps them when freed, so the slack there is likely smaller than counted (a conservative guess).
- q8/q4: torchao's fake quantisation makes quantise/round/dequantise temporaries of every Linear's input and weight
  between the saved tensors; glibc keeps them: depth 6 width 512 batch 4 q8 peaked 1424-1451 MiB with glibc against
  1204 MiB with jemalloc (estimate without slack 1221), about the QAT's saved tensors again, which is what is added.

Not modelled: compile=inductor's saved tensors (Inductor's partitioner may save less, or recompute): the eager figure is
used, with Inductor's larger runtime; framework jax/numpy keep their own buffers: the same arithmetic is used with
their measured runtime (the benchmark reports how close that is).
"""

from __future__ import annotations

import math
from pathlib import Path

from trainables.weights import parameter_shapes

GIB = 2**30
MIB = 2**20

# The worker's resident footprint apart from the model: peak_rss_mb of a trial of a near-empty model minus this
# module's estimate of that model (11.9 MiB: weights, gradients, AdamW state, activations with the logits). Measured
# 2026-12-06 on the 2-core development VM (AMD EPYC, 24 GiB, torch 2.13.0+cpu, jax 0.10.2, numpy 2.4.6, glibc malloc,
# threads=2) with
#   venv/bin/python bench.py trial depth=1 width=64 heads=1 seq_len=32 batch_size=1 measure_steps=3 warmup_steps=1 \
#       measure_seconds=0 --json --dataset-offline [framework=jax | framework=numpy | compile=inductor]
# peak_rss_mb: torch eager 345.3 / 345.6 / 346.3 (bf16 346.6, mixed 351.1), inductor 433.0, jax 351.6, numpy 88.2.
# Of torch's ~334 MiB, `import torch, torch._dynamo` alone is 301 MiB of RSS (89 MiB of it file-backed library pages);
# the rest is the worker's other modules, the OpenMP/MKL threads and buffers after the first steps. torchao
# (q8/q4/bitnet) adds ~13 MiB of imports and pytorch_optimizer (lamb/lookahead) ~4 MiB: inside the margin, not added.
RUNTIME_BYTES = {
    "torch": 334 * MIB,
    "jax": 340 * MIB,
    "numpy": 76 * MIB,
}
INDUCTOR_EXTRA_BYTES = 87 * MIB  # compile=inductor: torch._inductor, its codegen and compiled kernels, in the worker
# Refuse a trial whose estimate exceeds this share of MemAvailable: measured peak RSS was 0.88-1.08 of the estimate
# for torch trials that fit here (0.88-1.20 with inductor, numpy, jax; benchmarks/memory_estimate.py), and the page
# cache, the parent process and Ray need some room too. It is also the launcher's default memory cap (90% of total).
SAFETY_FRACTION = 0.9
# glibc (allocator=default): the next backward's gradients need this share of a gradient copy in fresh memory beside
# the previous step's holes, where the activations do not already hold as much (module docstring; measured 0.58-0.84)
GLIBC_GRADIENT_HOLES = 0.8

OPTIMIZER_STATE_COPIES = {"adamw": 2, "sgd": 1, "lookahead": 3, "lamb": 2}
OPTIMIZER_TRANSIENT_COPIES = {"lamb": 1}  # weight copies of temporaries inside step() (module docstring)
OPTIMIZER_LABELS = {
    "adamw": "AdamW state",
    "sgd": "SGD momentum",
    "lookahead": "Lookahead+AdamW state",
    "lamb": "LAMB state",
}
QUANTIZED = ("q8", "q4", "bitnet")
Q4_GROUP_SIZE = 32  # trainables/quantization.GROUP_SIZE (not imported: that module imports torch)
FP32, BF16, INT64 = 4, 2, 8


def _dims(cfg) -> dict:
    """The config's shapes, autos resolved as trainables/config.validate resolves them."""
    head_dim = cfg.head_dim if cfg.head_dim is not None else cfg.width // cfg.heads
    kv_heads = cfg.kv_heads if cfg.kv_heads is not None else cfg.heads
    backend = cfg.attn_backend or ("manual" if cfg.framework == "numpy" else "sdpa")
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


def _element_bytes(cfg) -> dict[str, int]:
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
    N sequences of L tokens (local: N = B*T/window, L = window; else N = B, L = T). Block (torch_model.Block):
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
    d, e = _dims(cfg), _element_bytes(cfg)
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
        # trainables/fused_linear_act.LinearActFunction saves (x, W, y) for relu, (x, W, b) otherwise, even when
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
    if _dims(cfg)["backend"] == "manual":
        return _element_bytes(cfg)["matmul"]
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


def _qat_saved_bytes(cfg) -> int:
    """What q8/q4/bitnet add to the saved tensors of all blocks, against fp32."""
    d = _dims(cfg)
    frozen = cfg.freeze_layers
    return frozen * _quantized_block_bytes(cfg, d, False) + (cfg.depth - frozen) * _quantized_block_bytes(cfg, d, True)


def saved_activation_bytes(cfg) -> int:
    """Bytes autograd saves for backward over one micro-batch (tensors that are not parameters or buffers)."""
    d, e = _dims(cfg), _element_bytes(cfg)
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
    d = _dims(cfg)
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


def estimate_training_memory(cfg) -> dict[str, int]:
    """Bytes: weights, gradients, optimizer_state, optimizer_transient, activations, buffers, allocator_slack, runtime,
    build_peak and total (module docstring)."""
    counts, e, d = parameter_counts(cfg), _element_bytes(cfg), _dims(cfg)
    weights = counts["total"] * e["param"]
    gradients = counts["trainable"] * e["param"] * (2 if cfg.grad_accum > 1 else 1)
    optimizer_state = OPTIMIZER_STATE_COPIES[cfg.optimizer] * counts["trainable"] * e["param"]
    optimizer_transient = OPTIMIZER_TRANSIENT_COPIES.get(cfg.optimizer, 0) * counts["trainable"] * e["param"]
    activations = activation_bytes(cfg)
    buffers = cfg.depth * d["L"] * d["L"]  # each block's bool attention mask
    runtime = RUNTIME_BYTES.get(cfg.framework, RUNTIME_BYTES["torch"])
    if cfg.compile == "inductor":
        runtime += INDUCTOR_EXTRA_BYTES
    build_peak = 2 * counts["total"] * FP32  # fp32 model + NumPy initial weights while they are copied in
    allocator_slack = 0
    if cfg.allocator == "default" and cfg.framework == "torch":  # glibc malloc: module docstring
        one_copy = counts["trainable"] * e["param"]
        allocator_slack = max(0, int(GLIBC_GRADIENT_HOLES * one_copy) - max(activations, optimizer_transient))
        if cfg.precision in ("q8", "q4"):  # the fake quantisation's temporaries, kept resident
            allocator_slack += _qat_saved_bytes(cfg)
    training = weights + buffers + gradients + optimizer_state + max(activations, optimizer_transient)
    training += allocator_slack
    return {
        "weights": weights,
        "gradients": gradients,
        "optimizer_state": optimizer_state,
        "optimizer_transient": optimizer_transient,
        "activations": activations,
        "buffers": buffers,
        "allocator_slack": allocator_slack,
        "runtime": runtime,
        "build_peak": build_peak,
        "total": runtime + max(training, build_peak),
    }


def estimate_mb(cfg) -> float:
    """The estimated peak RSS in MiB: the unit of a row's peak_rss_mb (ru_maxrss / 1024)."""
    return estimate_training_memory(cfg)["total"] / MIB


def available_memory_bytes(meminfo_path: str | Path = "/proc/meminfo") -> int:
    """MemAvailable (the kernel's estimate of what can be allocated without swapping), in bytes; MemFree where an
    old kernel has no MemAvailable."""
    fields = {}
    for line in Path(meminfo_path).read_text().splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            fields[name.strip()] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    if "MemAvailable" in fields:
        return fields["MemAvailable"]
    if "MemFree" in fields:
        return fields["MemFree"]
    raise ValueError(f"{meminfo_path}: no MemAvailable or MemFree line")


def describe_config(cfg) -> str:
    """'model=xl (batch_size=1, seq_len=1024)' or 'depth=4 width=256 (batch_size=1, seq_len=256)'."""
    name = f"model={cfg.model}" if cfg.model else f"depth={cfg.depth} width={cfg.width}"
    extras = [f"batch_size={cfg.batch_size}", f"seq_len={cfg.seq_len}"]
    extras += [f"precision={cfg.precision}"] if cfg.precision != "fp32" else []
    return f"{name} ({', '.join(extras)})"


def memory_unsupported_reason(cfg, available_bytes: int | None = None) -> str | None:
    """Why this node cannot hold the trial in memory, or None. available_bytes: MemAvailable (read from
    /proc/meminfo when None). A trial is refused when its estimate exceeds SAFETY_FRACTION of it."""
    available = available_memory_bytes() if available_bytes is None else available_bytes
    parts = estimate_training_memory(cfg)
    limit = SAFETY_FRACTION * available
    if parts["total"] <= limit:
        return None

    def gib(value: int) -> str:
        return f"{value / GIB:.1f}"

    items = [
        f"weights {gib(parts['weights'])}",
        f"gradients {gib(parts['gradients'])}",
        f"{OPTIMIZER_LABELS[cfg.optimizer]} {gib(parts['optimizer_state'])}",
        f"activations {gib(parts['activations'])}",
    ]
    if parts["optimizer_transient"] > parts["activations"]:
        items.append(
            f"{cfg.optimizer} step temporaries {gib(parts['optimizer_transient'])} (after activations are freed)"
        )
    if parts["buffers"] >= 0.05 * GIB:
        items.append(f"attention masks {gib(parts['buffers'])}")
    if parts["allocator_slack"] >= 0.05 * GIB:
        items.append(f"glibc heap slack {gib(parts['allocator_slack'])}")
    items.append(f"runtime {gib(parts['runtime'])} GiB")
    training = sum(parts[key] for key in ("weights", "buffers", "gradients", "optimizer_state", "allocator_slack"))
    training += max(parts["activations"], parts["optimizer_transient"])
    if parts["build_peak"] > training:
        items.append(f"but building the model peaks higher: {gib(parts['build_peak'])} GiB, two fp32 weight copies")
    return (
        f"{describe_config(cfg)} needs about {gib(parts['total'])} GiB to train ({', '.join(items)}, "
        f"estimated by trainables/memory.py) but this node has "
        f"{gib(available)} GiB available (trials are refused above {SAFETY_FRACTION:.0%} of it: {gib(limit)} GiB)"
    )
