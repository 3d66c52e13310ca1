"""blas=onednn-fp32: every Linear's forward and backward GEMMs, and manual attention's batched ones, in oneDNN with
strict fp32 math.

Why not a switch: torch 2.13 sends an fp32 matmul (aten::mm, addmm, bmm, and the tile GEMMs of SDPA's CPU kernel)
to oneDNN only where `torch.backends.mkldnn.matmul.fp32_precision` is "bf16" or "tf32" (use_mkldnn_bf32_matmul /
use_mkldnn_tf32_matmul in aten/src/ATen/native/mkldnn/Matmul.cpp), and then sets oneDNN's fpmath mode to bf16 or tf32;
with "ieee" (strict) they run MKL SGEMM. So every GEMM here is `torch.ops.mkldnn._linear_pointwise(a, b, None,
"none", [], None)`, a @ b^T as one oneDNN inner_product primitive (the op fused_linear_act.py runs with a post-op),
which honours the same fp32_precision: the trainer sets it to "ieee", and the worker starts with
ONEDNN_DEFAULT_FPMATH_MODE=STRICT (oneDNN's own default, which that variable could change under torch).
- Linear, y = x W^T: forward mm(x, W); grad_x = g W = mm(g, W^T); grad_W = g^T x = mm(g^T, x^T). The transposed
  operands are views: oneDNN reads the (in, out) weight as format `ba`, and copies a transposed source (the inner
  product takes a plain one). Measured (1024 rows, 512 -> 2048, 1 thread, AMD family 25 model 17 = Zen 4, a loaded
  machine): forward, grad-input, grad-weight 100, 105, 92 GFLOP/s, MKL's 84, 89, 86. In a d512 training step those copies are ~9% of
  the inner products' time (torch.profiler: aten::copy_ under mkldnn::_linear_pointwise).
- manual attention's q k^T and p v: torch.matmul's broadcast to (batch, M, K) @ (batch, K, N), then one inner product
  per batch element (a Python loop: torch exposes no strict-fp32 oneDNN batched matmul).
SDPA is not covered: its CPU flash kernel calls ATen's cpublas::gemm per tile, which is MKL SGEMM under strict math
and oneDNN matmul with attr-fpmath:bf16 under blas=onednn-bf16math (MKL_VERBOSE, ONEDNN_VERBOSE; torch 2.13).
Under torch.compile the GEMM is an opaque custom op, as in fused_linear_act.py.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from hwctl.kernels import MATMUL_REPEATS, MATMUL_SECONDS_PER_SIZE, MATMUL_SIZES, best_matmul_gflops
from hwctl.library_probe import libraries_in, onednn_math, verbose_lines
from trainables.torch_backend.model import CausalSelfAttention

# torch's blas values that run oneDNN; the row's onednn_math says what arithmetic it ran
ONEDNN_BLAS = ("onednn-fp32", "onednn-bf16math")


@torch.library.custom_op("bench_onednn::mm_nt", mutates_args=())
def _mm_nt(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b^T for a (M, K) and b (N, K), as one oneDNN inner product (forward_inference: it keeps no workspace)."""
    return torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], None)


@_mm_nt.register_fake
def _(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a.new_empty((a.shape[0], b.shape[0]))


class OneDNNLinearFunction(torch.autograd.Function):
    """y = x W^T + b, its three GEMMs in oneDNN (see the module docstring)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        x2 = x.reshape(-1, x.shape[-1])  # (rows, in)
        ctx.save_for_backward(x2, weight)
        ctx.input_shape, ctx.has_bias = x.shape, bias is not None
        y = _mm_nt(x2, weight)  # (rows, out)
        if bias is not None:
            y = y + bias
        return y.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x2, weight = ctx.saved_tensors
        g2 = grad.reshape(-1, grad.shape[-1])  # (rows, out)
        grad_x = _mm_nt(g2, weight.t()).reshape(ctx.input_shape) if ctx.needs_input_grad[0] else None  # g W
        grad_w = _mm_nt(g2.t(), x2.t()) if ctx.needs_input_grad[1] else None  # g^T x: (out, in)
        grad_b = g2.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


class OneDNNLinear(nn.Linear):
    """nn.Linear whose forward and backward run OneDNNLinearFunction: route_to_onednn() turns a model's Linears into
    it in place, so parameters, their names and weight tying stay as they were."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return OneDNNLinearFunction.apply(x, self.weight, self.bias)


def _bmm_nt(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b^T per batch element, a (B, M, K), b (B, N, K) -> (B, M, N)."""
    return torch.stack([_mm_nt(a_i, b_i) for a_i, b_i in zip(a.unbind(0), b.unbind(0), strict=True)])


class OneDNNBatchedMatmulFunction(torch.autograd.Function):
    """a @ b for a (B, M, K) and b (B, K, N), one oneDNN inner product per batch element, backward likewise."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor):
        ctx.save_for_backward(a, b)
        return _bmm_nt(a, b.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        a, b = ctx.saved_tensors
        grad_a = _bmm_nt(grad, b) if ctx.needs_input_grad[0] else None  # g b^T: (B, M, N) @ (B, N, K)
        grad_b = _bmm_nt(a.transpose(1, 2), grad.transpose(1, 2)) if ctx.needs_input_grad[1] else None  # a^T g
        return grad_a, grad_b


def onednn_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """torch.matmul of two (..., M, K) @ (..., K, N) tensors with broadcast batch dimensions, in oneDNN: batch
    dimensions expanded and flattened as torch.matmul does before its bmm (autograd sums the expanded gradients)."""
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a3 = a.expand(*batch, *a.shape[-2:]).reshape(-1, *a.shape[-2:])  # (B, M, K)
    b3 = b.expand(*batch, *b.shape[-2:]).reshape(-1, *b.shape[-2:])  # (B, K, N)
    return OneDNNBatchedMatmulFunction.apply(a3, b3).reshape(*batch, a.shape[-2], b.shape[-1])  # (..., M, N)


def route_to_onednn(model: nn.Module) -> int:
    """Every nn.Linear of `model` becomes an OneDNNLinear, and manual attention's matmul onednn_matmul; returns how
    many Linears were routed. Subclasses of nn.Linear (torchao's fake-quantised ones) are left alone: validation
    refuses blas=onednn-fp32 with them."""
    routed = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = OneDNNLinear
            routed += 1
        if isinstance(module, CausalSelfAttention):
            module.matmul = onednn_matmul
    return routed


@functools.cache
def strict_fp32_failure() -> str | None:
    """Why oneDNN cannot run a Linear's three GEMMs with strict fp32 math in this process (None when it can): the op
    missing, oneDNN refusing it, results off MKL's, or its verbose output showing another fpmath mode or dtype."""
    if not torch.backends.mkldnn.is_available():
        return "this torch build has no oneDNN (torch.backends.mkldnn.is_available() is false)"
    if not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return f"torch {torch.__version__} has no torch.ops.mkldnn._linear_pointwise"
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(32, 48, generator=gen, requires_grad=True), torch.randn(64, 48, generator=gen)
    w.requires_grad_(True)
    grad = torch.randn(32, 64, generator=gen)

    def run():
        OneDNNLinearFunction.apply(x, w, None).backward(grad)

    try:
        lines, _ = verbose_lines(run)
    except RuntimeError as err:  # e.g. a CPU or ISA cap oneDNN has no fp32 inner product for
        return f"oneDNN refused an fp32 inner product here ({str(err).splitlines()[0]})"
    if not torch.allclose(x.grad, grad @ w.detach(), rtol=1e-4, atol=1e-4):
        return "oneDNN's grad-input disagrees with MKL's"
    math = onednn_math(lines)
    if not math.startswith("strict"):
        return f"oneDNN did not run strict fp32 math: {math}"
    return None


def onednn_unsupported_reason(blas: str) -> str | None:
    """Why this node cannot run `blas` (onednn-fp32 or onednn-bf16math) for torch, or None; imports torch."""
    if not torch.backends.mkldnn.is_available():
        return f"blas={blas!r} needs oneDNN, and this torch build has none (torch.backends.mkldnn.is_available())"
    if blas != "onednn-fp32":
        return None
    previous = torch.backends.mkldnn.matmul.fp32_precision
    torch.backends.mkldnn.matmul.fp32_precision = "ieee"
    try:
        failure = strict_fp32_failure()
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = previous
    return f"blas='onednn-fp32' cannot run here: {failure}" if failure else None


def step_math(trainer) -> str:
    """onednn_math of one forward and backward of the trainer's model (compiled as the trial ran it) on a batch of
    the trial's shape, MKL and oneDNN verbose meanwhile; its gradients are put back as they were."""
    cfg = trainer.cfg
    gen = torch.Generator().manual_seed(cfg.seed)
    inputs, targets = (torch.randint(cfg.vocab_size, (cfg.batch_size, cfg.seq_len), generator=gen) for _ in range(2))
    saved = {name: p.grad for name, p in trainer.model.named_parameters()}

    def run():
        trainer.model.zero_grad(set_to_none=True)
        trainer.backward(trainer.forward(inputs, targets))

    try:
        lines, _ = verbose_lines(run)
    finally:
        for name, p in trainer.model.named_parameters():
            p.grad = saved[name]
    return onednn_math(lines)


PEAK_FIGURE = "matmul onednn-fp32"  # its entry in the node's peak cache, beside torch.mm's "matmul"
PEAK_METHOD = (
    f"best GFLOP/s of oneDNN's strict-fp32 inner product (_mm_nt) square n in {MATMUL_SIZES} (2n^3 FLOPs), after one "
    f"warm-up call, up to {MATMUL_REPEATS} calls or {MATMUL_SECONDS_PER_SIZE} s per n, in the measuring process"
)


def measure_peak_gflops() -> float:
    """The fp32 peak blas=onednn-fp32's mfu divides by: its own GEMM, timed as hwctl/kernels.py times torch.mm, in
    the worker's torch threads and fp32_precision (the trainer set "ieee")."""
    return best_matmul_gflops(lambda n: functools.partial(_mm_nt, torch.randn(n, n), torch.randn(n, n)))


def linear_library(rows: int, features: int, hidden: int) -> str:
    """The library and kernel one OneDNNLinear forward of (rows, features) -> (rows, hidden) ran, from its verbose
    output ('onednn (brg_matmul:avx512_core)'): the row's matmul_library where blas=onednn-fp32."""
    x, w = torch.randn(rows, features), torch.randn(hidden, features)
    lines, _ = verbose_lines(lambda: OneDNNLinearFunction.apply(x, w, None))
    return " + ".join(libraries_in(lines)) or "unknown"
