"""Linear + activation as one oneDNN kernel (fused_linear_act=true), with a hand-written backward.

Forward: `torch.ops.mkldnn._linear_pointwise(x, W, b, attr, [], algorithm)` runs one oneDNN inner_product primitive
with an eltwise post-op: the activation is applied to each output tile while it is in registers, instead of in a
second pass over the (rows, hidden) tensor. ONEDNN_VERBOSE shows one line, `inner_product,brg_matmul:...,
forward_inference,...,attr-post-ops:eltwise_relu` (eltwise_gelu_erf, eltwise_swish:1): see fusion_evidence().
(forward_inference because autograd.Function.forward runs with grad off; inner product keeps no workspace, so a
training forward would compute the same.) It takes the plain (out, in) weight, no prepacking, so the Parameter stays
the Linear's own. The op knows relu, sigmoid, tanh, swish, hardswish, hardsigmoid, leaky_relu, hardtanh and gelu
(erf, or tanh); the model's relu, gelu (exact erf) and silu (swish, alpha 1) map onto it. It runs fp32 and bf16 (bf16
needs oneDNN bf16 kernels on the CPU: probed, not assumed); it has no autocast rule, so under autocast
(precision=mixed) the module casts x and W itself, as autocast does for F.linear. Under torch.compile it is an opaque
custom op: Inductor's own lowering of _linear_pointwise only takes a frozen weight.

The backward does not fuse (oneDNN has no inner-product backward with an eltwise pre-op): it runs the aten ops that
nn.Linear + activation run, grad_pre = act_backward(dY, .), dX = grad_pre @ W, dW = grad_pre^T @ X.
- relu: the output suffices (pre > 0 exactly where y > 0): nothing extra saved or computed.
- gelu, silu: the derivative needs the pre-activation, which the fused kernel never writes out, and neither function
  can be inverted from its output. Getting it in the forward takes a second, unfused GEMM (no fusion left), so the
  backward recomputes pre = X @ W^T: one extra GEMM, +1/3 of the layer's three, traded for not keeping the
  (rows, hidden) pre-activation alive (the activation-checkpointing trade). It is a net loss in time.
What it buys, measured (x 1024x768 through 768->3072, fwd+bwd, fp32, Zen 5, 1 and 2 threads, a loaded machine):
relu about 1.10x, gelu about 0.78x. Of relu's gain the fusion itself is ~1 ms of a ~66 ms forward (the relu pass
alone costs ~1.2 ms); the rest is oneDNN's GEMM being faster than the MKL SGEMM the unfused fp32 Linear runs here.
Numerics: fp32 outputs agree with the unfused ones to rounding (~1e-6 relative, different GEMM kernels) and the
gradients come out equal; in bf16 the fused kernel applies the activation before rounding to bf16 (~6e-3 apart).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from trainables.torch_backend.support import QUANTIZED

# model activation name -> (oneDNN post-op attr of _linear_pointwise, its algorithm argument)
_ONEDNN_ATTR: dict[str, tuple[str, str | None]] = {
    "relu": ("relu", None),
    "gelu": ("gelu", "none"),
    "silu": ("swish", None),
}
SUPPORTED_ACTIVATIONS: tuple[str, ...] = tuple(_ONEDNN_ATTR)
# precision -> the dtype the fused kernel runs in (mixed: autocast's bf16)
SUPPORTED_PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "mixed": torch.bfloat16}
# how ONEDNN_VERBOSE names each post-op (swish's alpha is 1 for silu)
_VERBOSE_POST_OP = {"relu": "eltwise_relu", "gelu": "eltwise_gelu_erf", "silu": "eltwise_swish:1"}
_REFERENCE = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu}
_REPO_ROOT = Path(__file__).resolve().parents[2]  # trainables/torch_backend/ -> the checkout


@functools.cache
def _kernel_failure(activation: str, dtype: torch.dtype) -> str | None:
    """Why the fused kernel cannot run here (None if it runs and agrees with the unfused ops on a tiny problem)."""
    if not torch.backends.mkldnn.is_available():
        return "this torch build has no oneDNN (torch.backends.mkldnn.is_available() is false)"
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(8, 16, generator=gen).to(dtype), torch.randn(32, 16, generator=gen).to(dtype)
    attr, algorithm = _ONEDNN_ATTR[activation]
    try:
        with torch.no_grad(), torch.autocast("cpu", enabled=False):  # it may first be asked under autocast
            y = torch.ops.mkldnn._linear_pointwise(x, w, None, attr, [], algorithm)
            expected = _REFERENCE[activation](x.float() @ w.float().t())
    except RuntimeError as err:  # e.g. bf16 on a CPU without oneDNN bf16 kernels
        return f"oneDNN refused it on this CPU ({str(err).splitlines()[0].split('. Run workload')[0]})"
    if not torch.allclose(y.float(), expected, rtol=0.05, atol=0.05):
        return "oneDNN's fused result disagrees with the unfused ops"
    return None


def fused_unsupported_reason(activation: str, precision: str) -> str | None:
    """Why fused_linear_act=true cannot run `activation` at `precision` on this machine; None when it can."""
    supported = f"fused_linear_act=true supports activation {', '.join(SUPPORTED_ACTIVATIONS)} with precision {', '.join(SUPPORTED_PRECISIONS)}"
    if activation not in _ONEDNN_ATTR:
        return f"{supported}; got activation {activation!r}"
    if precision in QUANTIZED:
        # they train through fake-quantised Linears: the oneDNN kernel would bypass the quantisation
        return (
            f"{supported}; got precision {precision!r} (the fused oneDNN kernel would bypass its fake-quantised Linear)"
        )
    if precision not in SUPPORTED_PRECISIONS:
        return f"{supported}; got precision {precision!r}"
    failure = _kernel_failure(activation, SUPPORTED_PRECISIONS[precision])
    if failure:
        return f"{supported}; {activation} at {precision} cannot run here: {failure}"
    return None


def _check(activation: str, dtype: torch.dtype) -> None:
    precision = {torch.float32: "fp32", torch.bfloat16: "bf16"}.get(dtype, str(dtype))
    reason = fused_unsupported_reason(activation, precision)
    if reason:
        raise ValueError(reason)


@torch.library.custom_op("bench_fused::linear_act", mutates_args=())
def _linear_act(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str) -> torch.Tensor:
    """The fused kernel, wrapped as an opaque op: Inductor's own lowering of _linear_pointwise assumes a frozen
    (constant) weight and fails on a trained one, so under torch.compile it must stay an extern call."""
    attr, algorithm = _ONEDNN_ATTR[activation]
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, attr, [], algorithm)


@_linear_act.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


class LinearActFunction(torch.autograd.Function):
    """y = act(x @ W^T + b) in one oneDNN kernel; backward as documented at the top of the module."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str):
        y = _linear_act(x, weight, bias, activation)
        ctx.activation, ctx.has_bias = activation, bias is not None
        if activation == "relu":
            ctx.save_for_backward(x, weight, y)  # y is the next layer's input: saving it costs nothing extra
        else:
            ctx.save_for_backward(x, weight, bias)  # pre is recomputed from these in backward
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight, third = ctx.saved_tensors
        x2 = x.reshape(-1, x.shape[-1])  # (rows, in)
        g2 = grad.reshape(-1, grad.shape[-1])  # (rows, out)
        if ctx.activation == "relu":
            grad_pre = torch.ops.aten.threshold_backward(g2, third.reshape(g2.shape), 0)  # what ReLU's backward runs
        else:
            pre = F.linear(x2, weight, third)  # the extra GEMM: the fused kernel never stored pre
            if ctx.activation == "gelu":
                grad_pre = torch.ops.aten.gelu_backward(g2, pre, approximate="none")
            else:
                grad_pre = torch.ops.aten.silu_backward(g2, pre)
        grad_x = (grad_pre @ weight).reshape(x.shape) if ctx.needs_input_grad[0] else None
        grad_w = grad_pre.t() @ x2 if ctx.needs_input_grad[1] else None
        grad_b = grad_pre.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None


class FusedLinearAct(nn.Module):
    """act(linear(x)) as one oneDNN kernel, using `linear`'s own weight and bias Parameters.

    The Linear is not registered as a submodule: its parent keeps owning it, so parameter names, state_dict keys
    and the parameter count stay those of the unfused model (`mlp.up.weight`), and dtype conversions of the parent
    reach it. Used on its own, this module therefore has no parameters of its own: train `linear`'s.
    """

    def __init__(self, linear: nn.Linear, activation: str):
        super().__init__()
        _check(activation, linear.weight.dtype)
        self.activation = activation
        object.__setattr__(self, "_linear", linear)  # a plain reference, not a submodule (see the docstring)

    @property
    def linear(self) -> nn.Linear:
        return self._linear

    @property
    def weight(self) -> nn.Parameter:
        return self._linear.weight

    @property
    def bias(self) -> nn.Parameter | None:
        return self._linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self._linear.weight, self._linear.bias
        # the dtype may have changed since __init__ (model.to(bf16), autocast); the check is cached in eager, and
        # skipped under torch.compile, which would otherwise trace its probe kernel into the graph
        check = not torch.compiler.is_compiling()
        if torch.is_autocast_enabled("cpu"):
            # _linear_pointwise has no autocast rule: cast as autocast casts F.linear's arguments, then run un-autocast
            dtype = torch.get_autocast_dtype("cpu")
            if check:
                _check(self.activation, dtype)
            x, weight = x.to(dtype), weight.to(dtype)
            bias = bias.to(dtype) if bias is not None else None
            with torch.autocast("cpu", enabled=False):
                return LinearActFunction.apply(x, weight, bias, self.activation)
        if check:
            _check(self.activation, weight.dtype)
        if x.dtype != weight.dtype:
            raise ValueError(f"FusedLinearAct: input is {x.dtype} but the weight is {weight.dtype}")
        return LinearActFunction.apply(x, weight, bias, self.activation)

    def extra_repr(self) -> str:
        return f"{self._linear.in_features}, {self._linear.out_features}, activation={self.activation}"


_EVIDENCE_SCRIPT = """
import sys, torch
from torch import nn
from trainables.torch_backend.fused_linear_act import FusedLinearAct
rows, features, hidden, activation, dtype = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], getattr(torch, sys.argv[5])
torch.backends.mkldnn.matmul.fp32_precision = sys.argv[6]  # the caller's (blas=onednn-bf16math sets bf16 math)
linear = nn.Linear(features, hidden, bias=False).to(dtype)
x = torch.randn(rows, features, dtype=dtype, requires_grad=True)
fused = FusedLinearAct(linear, activation)  # its support probe runs oneDNN too: before the markers
print("FUSED-FORWARD-BEGIN", flush=True)
y = fused(x)
print("FUSED-FORWARD-END", flush=True)
"""


def fusion_evidence(
    activation: str, dtype: str = "float32", rows: int = 64, features: int = 64, hidden: int = 256
) -> str:
    """The ONEDNN_VERBOSE line of one fused forward of a (rows, features) -> (rows, hidden) layer, run in a
    subprocess with this process's oneDNN fp32 math mode: one inner_product/matmul primitive whose attributes carry
    the eltwise post-op. Raises ValueError for an activation that does not fuse, and RuntimeError (with what ran)
    when the forward ran anything else.
    """
    if activation not in _VERBOSE_POST_OP:
        raise ValueError(fused_unsupported_reason(activation, "fp32"))
    env = {
        **os.environ,
        "ONEDNN_VERBOSE": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(_REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    args = [str(rows), str(features), str(hidden), activation, dtype, torch.backends.mkldnn.matmul.fp32_precision]
    run = subprocess.run(
        [sys.executable, "-c", _EVIDENCE_SCRIPT, *args],
        env=env,
        cwd=_REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if run.returncode != 0:
        last = run.stderr.strip().splitlines()[-1:] or [f"exit status {run.returncode}"]
        raise RuntimeError(f"the fused forward failed: {last[0]}")
    # only what the forward itself ran: the primitives between the markers
    section = run.stdout.partition("FUSED-FORWARD-BEGIN")[2].partition("FUSED-FORWARD-END")[0]
    executed = [line for line in section.splitlines() if line.startswith("onednn_verbose") and ",exec," in line]
    post_op = f"attr-post-ops:{_VERBOSE_POST_OP[activation]}"
    fused = [line for line in executed if (",inner_product," in line or ",matmul," in line) and post_op in line]
    if len(executed) != 1 or len(fused) != 1:
        raise RuntimeError(
            f"expected one oneDNN primitive with {post_op}, the fused forward ran: {executed or run.stdout[-2000:]}"
        )
    return fused[0].rsplit(",", 1)[0]  # without the last field, the execution time in ms
