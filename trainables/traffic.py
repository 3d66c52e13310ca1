"""Bytes one optimizer step moves between memory and the cores, from the config alone: the roofline's denominator.

flops.py counts what the kernels compute; this counts what they read and write, op by op on the torch model
(trainables/torch_backend/model.py), each op reading its inputs once and writing its outputs once. Assumptions:

- Sizes: every tensor is counted at its full size on every read and every write, whatever the caches hold. The count
  is the traffic past the cores' private caches into a memory as fast as the triad bandwidth says: a step whose
  tensors stay in the last-level cache moves less to DRAM than this, and its trial may beat the DRAM roof
  (roofline_fraction > 1). A GEMM reads each operand once and writes its output once (its blocking's re-reads hit
  the caches); a row-wise op (layer norm, softmax of one row of V or L logits) reads its row once.
- Element sizes, by precision: fp32 4 bytes everywhere; bf16 2 (weights, gradients, optimizer state and activations
  are bf16; the loss's log-softmax runs in fp32 after a cast); mixed (autocast): fp32 weights, gradients, optimizer
  state, residual stream and layer norms, bf16 Linear inputs/outputs and attention, plus autocast's casts (each
  Linear's weight to a bf16 copy every micro-batch, the fp32 inputs of qkv and up to bf16, and the reverse casts of
  their gradients); q8/q4/bitnet (torchao QAT): counted as fp32 (fp32 master weights, fp32 matmuls on fake-quantised
  copies) plus one read and one write of each Linear's weight and input for the fake quantisation in the forward;
  the int8 storage bitnet saves for backward is not modelled (approximated).
- Attention: q, k, v read and the output written by the kernel are the score matmuls' operands (matmul_bytes).
  attention_bytes is the L x L scores/probabilities: the CPU flash kernel (sdpa-flash) keeps each block of them in
  cache, forward and its recomputing backward: 0 (but for sliding attention, whose L x L additive mask it reads for
  every sequence and head, forward and backward: counted here). Dense kernels write them: eager (manual, sdpa-math)
  one pass per op (scores, scale, mask, softmax, dropout, and their gradients); fused (sdpa-xla, and manual under
  torch.compile's inductor, which fuses scale, mask and softmax into one kernel) the scores once, the probabilities
  once.
  sdpa-math scores are fp32 (torch's math fallback upcasts bf16 on CPU); manual's are in the matmul dtype.
- Element-wise ops (layer norms, activation, residual adds, dropout masks, layout copies, the embedding, the loss)
  are counted unfused, as eager torch runs them; under torch.compile and XLA they fuse, so for those trials
  elementwise_bytes is an upper bound.
- Gradients: the first micro-batch writes each weight gradient; every later one writes a new one and adds it in
  (read both, write the sum: 3 more passes). The tied wte/lm_head weight gets two gradients per micro-batch, summed
  (3 passes). Frozen blocks (freeze_layers) have no weight-gradient GEMM, no gradient and no optimizer traffic.
- Optimizer, per trainable parameter in its dtype, steady state (state already allocated): adamw (fused kernel)
  reads param, grad, exp_avg, exp_avg_sq and writes param, exp_avg, exp_avg_sq: 7 passes; sgd (foreach, momentum
  and weight decay: grad + wd*param, buf *= momentum, buf += grad, param -= lr*buf): 11; lookahead: AdamW's 7 plus,
  every 5th step, param.lerp_(slow) (3) and slow.copy_(param) (2): 5 / 5 per step; lamb (pytorch_optimizer 4.1's
  foreach step, one pass per _foreach op, a read of g counted once where it is read twice): decoupled decay
  param *= f (2), exp_avg *= b1, += g (5), exp_avg_sq *= b2, addcmul g*g (5), update = sqrt(v), += eps,
  reciprocal, *= m (9), the norms of params and update (2), update *= trust ratio (2), param += update (3): 28. jax's
  optax and NumPy's hand-written AdamW (over cache-sized chunks) are counted as torch's fused one.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainables.activation_memory import QUANTIZED, parameter_counts, shapes
from trainables.flops import attention_kernel

FP32, BF16 = 4, 2
OPTIMIZER_PASSES = {"adamw": 7.0, "sgd": 11.0, "lookahead": 7.0 + 5 / 5, "lamb": 28.0}  # the docstring derives them
FUSED_COMPILES = ("inductor", "inductor-max-autotune")


@dataclass(frozen=True)
class StepTraffic:
    """Bytes per optimizer step (all grad_accum micro-batches), by kind of work and by phase."""

    matmul_bytes: float  # linear layers: weights read (fwd+bwd), weight grads written, their inputs/outputs
    attention_bytes: float  # scores/probabilities written and re-read (0 where the flash kernel keeps them in cache)
    elementwise_bytes: float  # norms, activations, residual adds, dropout masks, softmax of the loss, embedding
    optimizer_bytes: float  # the optimizer step's reads and writes of params, grads and state
    forward_bytes: float
    backward_bytes: float  # forward_bytes + backward_bytes + optimizer_bytes == total_bytes

    @property
    def total_bytes(self) -> float:
        return self.forward_bytes + self.backward_bytes + self.optimizer_bytes


class _Ledger:
    """Bytes by (kind, phase), kind one of matmul, attention, elementwise."""

    def __init__(self):
        self.bytes = {(kind, phase): 0.0 for kind in ("matmul", "attention", "elementwise") for phase in ("f", "b")}

    def add(self, kind: str, phase: str, amount: float) -> None:
        self.bytes[kind, phase] += amount

    def kind(self, kind: str) -> float:
        return self.bytes[kind, "f"] + self.bytes[kind, "b"]

    def phase(self, phase: str) -> float:
        return sum(v for (_, p), v in self.bytes.items() if p == phase)


def element_sizes(cfg) -> dict[str, int]:
    """Bytes per element: param (weights, grads, state as stored), weight (as a matmul reads it), act (Linear
    inputs/outputs, attention), resid (residual stream and layer norms)."""
    bf16, mixed = cfg.precision == "bf16", cfg.precision == "mixed"
    return {
        "param": BF16 if bf16 else FP32,
        "weight": BF16 if bf16 or mixed else FP32,
        "act": BF16 if bf16 or mixed else FP32,
        "resid": BF16 if bf16 else FP32,
    }


def _linear(ledger: _Ledger, cfg, rows: int, fan_in: int, fan_out: int, trains: bool) -> None:
    """y (rows, fan_out) = x (rows, fan_in) @ W^T for one micro-batch: forward, input gradient, weight gradient."""
    e = element_sizes(cfg)
    x, y, w = rows * fan_in * e["act"], rows * fan_out * e["act"], fan_in * fan_out * e["weight"]
    ledger.add("matmul", "f", x + w + y)
    ledger.add("matmul", "b", y + w + x)  # dx = dy @ W: read dy, W; write dx
    if trains:  # dW = dy^T @ x: read dy, x; write dW (mixed: in bf16, cast to the fp32 gradient below)
        ledger.add("matmul", "b", y + x + fan_in * fan_out * e["weight"])
    if cfg.precision == "mixed":  # autocast's weight copy each forward, and its gradient's cast back
        ledger.add("elementwise", "f", fan_in * fan_out * (FP32 + BF16))
        if trains:
            ledger.add("elementwise", "b", fan_in * fan_out * (BF16 + FP32))
    if cfg.precision in QUANTIZED:  # fake quantisation: read and write each weight and input
        ledger.add("elementwise", "f", 2 * (fan_in * fan_out + rows * fan_in) * FP32)


def _layer_norm(ledger: _Ledger, cfg, rows: int, width: int) -> None:
    """Forward: read x, write y, mean, rstd; backward: read dy, x, mean, rstd, write dx (gamma/beta grads: small)."""
    r = element_sizes(cfg)["resid"]
    stats = 2 * rows * r
    ledger.add("elementwise", "f", 2 * rows * width * r + stats)
    ledger.add("elementwise", "b", 3 * rows * width * r + stats + 2 * width * r)


def _cast_to_act(ledger: _Ledger, cfg, elements: int) -> None:
    """mixed: autocast casts an fp32 Linear input to bf16, and its gradient back."""
    if cfg.precision == "mixed":
        ledger.add("elementwise", "f", elements * (FP32 + BF16))
        ledger.add("elementwise", "b", elements * (BF16 + FP32))


def _residual_branch_end(ledger: _Ledger, cfg, elements: int) -> None:
    """A branch's dropout (if any) and its residual add: forward read both, write the sum; backward sums the two
    gradients arriving at the block input."""
    e = element_sizes(cfg)
    if cfg.dropout > 0:  # read y, write the noise and the dropped y; backward read dy and noise, write
        ledger.add("elementwise", "f", 3 * elements * e["act"])
        ledger.add("elementwise", "b", 3 * elements * e["act"])
    ledger.add("elementwise", "f", elements * (2 * e["resid"] + e["act"]))
    ledger.add("elementwise", "b", 3 * elements * e["resid"])


def _attention(ledger: _Ledger, cfg) -> None:
    """One layer's attention kernel for one micro-batch (q, k, v from the qkv output, output before proj)."""
    d, e = shapes(cfg), element_sizes(cfg)
    tokens, A, K = d["B"] * d["T"], d["A"], d["K"]
    kernel = attention_kernel(cfg)
    if kernel == "sdpa-flash":
        # forward: read q, k, v, write out and logsumexp; backward: read q, k, v, out, dout, logsumexp, write dq, dk, dv
        qkv, out, lse = tokens * (A + 2 * K) * e["act"], tokens * A * e["act"], d["N"] * d["nh"] * d["L"] * FP32
        ledger.add("matmul", "f", qkv + out + lse)
        ledger.add("matmul", "b", qkv + 2 * out + lse + qkv)
        if cfg.attention == "sliding":
            # the bool band mask, converted to an additive float mask each call; the kernel then reads its blocks
            # for every sequence and head, forward and backward (its scores it keeps; the mask it must read)
            ledger.add("elementwise", "f", d["T"] ** 2 * (1 + e["act"]))
            mask_reads = d["N"] * d["nh"] * d["L"] ** 2 * e["act"]
            ledger.add("attention", "f", mask_reads)
            ledger.add("attention", "b", mask_reads)
        return
    dense_bytes = FP32 if kernel == "sdpa-math" else e["act"]
    scores = d["N"] * d["nh"] * d["L"] ** 2 * dense_bytes
    head = tokens * A * dense_bytes  # q, k (broadcast to every head), v, out: one head-wide tensor each
    # copies of q, k^T, v into batched-matmul layout, and of the output back to (B, T, A); their gradients back
    layout = tokens * (A + 2 * K) * e["act"] + 3 * head + 2 * head
    ledger.add("elementwise", "f", layout)
    ledger.add("elementwise", "b", layout)
    # q.k: read q, k; p.v: read v, write out. Backward: dP = dout.v^T, dV = P^T.dout, dQ = dS.K, dK = dS^T.Q
    ledger.add("matmul", "f", 4 * head)
    ledger.add("matmul", "b", 8 * head)
    fused = kernel == "sdpa-xla" or (kernel == "manual" and cfg.compile in FUSED_COMPILES)
    dropout = 3 if cfg.dropout > 0 else 0  # read, write noise, write output; backward read dP, noise, write
    if fused:
        # write scores; read them, write probabilities; p.v reads them. Backward: write dP; dV reads P; softmax'
        # reads dP, P, writes dS; dQ and dK read dS
        ledger.add("attention", "f", (4 + dropout) * scores)
        ledger.add("attention", "b", (7 + dropout) * scores)
    else:
        # write scores; scale r+w; masked_fill r+w (mask L x L bool); softmax r+w; p.v reads. Backward: write dP; dV
        # reads P; softmax' 3; masked_fill' 2; scale' 2; dQ and dK read dS
        ledger.add("attention", "f", (7 + dropout) * scores)
        ledger.add("attention", "b", (10 + dropout) * scores)
        mask = d["L"] ** 2 if kernel == "manual" else 0
        ledger.add("elementwise", "f", 2 * mask)  # ~mask is a new bool tensor each forward
        ledger.add("elementwise", "b", mask)


def _micro_batch(ledger: _Ledger, cfg) -> None:
    """Forward and backward of one micro-batch."""
    d, e = shapes(cfg), element_sizes(cfg)
    tokens, C, H, A, K, V, T = d["B"] * d["T"], d["C"], d["H"], d["A"], d["K"], d["V"], d["T"]
    # embedding: gather wte rows (read, write) and wpe's (read, write), add them (read both, write the sum).
    # Backward: wpe's gradient sums the batch (read dx, write); wte's is zero-filled (V x C) and the token rows
    # scatter-added into it (read dx, read and write the rows)
    p, r = e["param"], e["resid"]
    ledger.add("elementwise", "f", (tokens + T) * C * (p + r) + (tokens + T) * C * r + tokens * C * r)
    ledger.add("elementwise", "b", tokens * C * r + T * C * p + V * C * p + tokens * C * (r + 2 * p))
    if cfg.dropout > 0:
        ledger.add("elementwise", "f", 3 * tokens * C * e["resid"])
        ledger.add("elementwise", "b", 3 * tokens * C * e["resid"])
    for layer in range(cfg.depth):
        trains = layer >= cfg.freeze_layers
        _layer_norm(ledger, cfg, tokens, C)
        _cast_to_act(ledger, cfg, tokens * C)
        _linear(ledger, cfg, tokens, C, A + 2 * K, trains)
        _attention(ledger, cfg)
        _linear(ledger, cfg, tokens, A, C, trains)
        _residual_branch_end(ledger, cfg, tokens * C)
        _layer_norm(ledger, cfg, tokens, C)
        _cast_to_act(ledger, cfg, tokens * C)
        _linear(ledger, cfg, tokens, C, H, trains)
        if not (cfg.fused_linear_act and cfg.precision not in QUANTIZED):  # fused: the activation runs in the GEMM
            ledger.add("elementwise", "f", 2 * tokens * H * e["act"])
        ledger.add("elementwise", "b", 3 * tokens * H * e["act"])  # read dy, its input; write dx
        _linear(ledger, cfg, tokens, H, C, trains)
        _residual_branch_end(ledger, cfg, tokens * C)
    _layer_norm(ledger, cfg, tokens, C)
    _cast_to_act(ledger, cfg, tokens * C)
    _linear(ledger, cfg, tokens, C, V, True)  # lm_head, tied to wte
    logits = tokens * V
    if e["act"] != FP32:  # .float() before the loss, and its gradient's cast back
        ledger.add("elementwise", "f", logits * (e["act"] + FP32))
        ledger.add("elementwise", "b", logits * (FP32 + e["act"]))
    # log_softmax: read logits, write log-probabilities; nll reads one per row. Backward: nll' writes the (mostly
    # zero) gradient; log_softmax' reads it and its output, writes the logits' gradient
    ledger.add("elementwise", "f", 2 * logits * FP32)
    ledger.add("elementwise", "b", 4 * logits * FP32)
    # the tied weight's two gradients (lm_head's and the embedding's) summed
    ledger.add("matmul", "b", 3 * V * C * e["param"])


def _gradient_accumulation(cfg) -> dict[str, float]:
    """Extra passes of micro-batches 2..grad_accum: add each new gradient into the kept one (read 2, write 1)."""
    extra = 3 * (cfg.grad_accum - 1) * element_sizes(cfg)["param"]
    counts = parameter_counts(cfg)
    block_linear_trainable = (cfg.depth - cfg.freeze_layers) * counts["block_linear"]
    linear = block_linear_trainable + counts["wte"]
    return {"matmul": extra * linear, "elementwise": extra * (counts["trainable"] - linear)}


def optimizer_bytes(cfg) -> float:
    """The optimizer step's reads and writes over the trainable parameters."""
    passes = OPTIMIZER_PASSES[cfg.optimizer]
    return passes * parameter_counts(cfg)["trainable"] * element_sizes(cfg)["param"]


def step_traffic(cfg) -> StepTraffic:
    """The bytes one optimizer step moves: grad_accum micro-batches of forward and backward, then the update."""
    ledger = _Ledger()
    _micro_batch(ledger, cfg)
    accum = _gradient_accumulation(cfg)
    m = cfg.grad_accum
    optimizer = optimizer_bytes(cfg)
    return StepTraffic(
        matmul_bytes=m * ledger.kind("matmul") + accum["matmul"],
        attention_bytes=m * ledger.kind("attention"),
        elementwise_bytes=m * ledger.kind("elementwise") + accum["elementwise"],
        optimizer_bytes=optimizer,
        forward_bytes=m * ledger.phase("f"),
        backward_bytes=m * ledger.phase("b") + accum["matmul"] + accum["elementwise"],
    )
