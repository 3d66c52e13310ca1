"""FusedLinearAct: one oneDNN kernel for Linear + activation, with gradients equal to the unfused ops."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainables.torch_backend.fused_linear_act import (
    SUPPORTED_ACTIVATIONS,
    FusedLinearAct,
    fused_unsupported_reason,
    fusion_evidence,
)

pytestmark = pytest.mark.skipif(
    not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN: no fused Linear + activation kernel"
)

UNFUSED = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}
# fp32: the fused GEMM is oneDNN's, the unfused one MKL's, so rounding differs (~1e-6 relative measured).
# bf16: the fused kernel applies the activation before rounding to bf16, the unfused one after (~6e-3 measured).
TOLERANCE = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=2e-2, atol=2e-2)}
PRECISION = {torch.float32: "fp32", torch.bfloat16: "bf16"}


def _run(module, linear: nn.Linear, x: torch.Tensor, grad: torch.Tensor):
    x = x.detach().requires_grad_()
    linear.zero_grad(set_to_none=True)
    y = module(x)
    y.backward(grad)
    return y.detach(), x.grad, linear.weight.grad, None if linear.bias is None else linear.bias.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("activation", SUPPORTED_ACTIVATIONS)
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
def test_forward_and_gradients_match_unfused(activation, dtype, bias):
    reason = fused_unsupported_reason(activation, PRECISION[dtype])
    if reason:
        pytest.skip(reason)
    torch.manual_seed(0)
    linear = nn.Linear(48, 96, bias=bias).to(dtype)
    x, grad = torch.randn(3, 17, 48, dtype=dtype), torch.randn(3, 17, 96, dtype=dtype)
    act = UNFUSED[activation]()
    expected = _run(lambda t: act(linear(t)), linear, x, grad)
    got = _run(FusedLinearAct(linear, activation), linear, x, grad)
    for name, g, e in zip(("y", "dX", "dW", "db"), got, expected, strict=True):
        if e is None:
            assert g is None, name
            continue
        torch.testing.assert_close(g, e, **TOLERANCE[dtype], msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("activation", SUPPORTED_ACTIVATIONS)
def test_autocast_matches_unfused_autocast(activation):
    reason = fused_unsupported_reason(activation, "mixed")
    if reason:
        pytest.skip(reason)
    torch.manual_seed(0)
    linear = nn.Linear(48, 96, bias=False)
    x, grad = torch.randn(64, 48), torch.randn(64, 96, dtype=torch.bfloat16)
    act, fused = UNFUSED[activation](), FusedLinearAct(linear, activation)

    def autocast(fn):
        def run(t):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return fn(t)

        return run

    expected = _run(autocast(lambda t: act(linear(t))), linear, x, grad)
    got = _run(autocast(fused), linear, x, grad)
    assert got[0].dtype == expected[0].dtype == torch.bfloat16  # as autocast's F.linear gives
    assert got[2].dtype == torch.float32  # the master weight's gradient
    for g, e in zip(got[:3], expected[:3], strict=True):
        torch.testing.assert_close(g, e, **TOLERANCE[torch.bfloat16])


def test_uses_the_linears_own_parameter():
    class Parent(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.Linear(8, 16, bias=False)
            self.up_act = FusedLinearAct(self.up, "relu")

    parent = Parent()
    assert parent.up_act.weight is parent.up.weight
    # names, state_dict keys and the parameter count stay the unfused model's
    assert [name for name, _ in parent.named_parameters()] == ["up.weight"]
    assert list(parent.state_dict()) == ["up.weight"]
    dtype = torch.float32 if fused_unsupported_reason("relu", "bf16") else torch.bfloat16  # no bf16 on AVX2
    parent = parent.to(dtype)  # a dtype change of the parent reaches the fused op
    assert parent.up_act.weight is parent.up.weight and parent.up_act.weight.dtype == dtype
    parent.up_act(torch.randn(2, 8, dtype=dtype)).sum().backward()
    assert parent.up.weight.grad is not None


def test_fusion_evidence_shows_one_primitive_with_the_post_op():
    # a subprocess with ONEDNN_VERBOSE=1 (a few seconds: it imports torch): relu only, the claim under test
    line = fusion_evidence("relu")
    assert line.startswith("onednn_verbose")
    assert ",inner_product," in line or ",matmul," in line
    assert "attr-post-ops:eltwise_relu" in line
    assert "src:f32" in line


def test_unsupported_combinations_give_a_clear_error():
    assert fused_unsupported_reason("relu", "fp32") is None
    for precision in ("q8", "q4", "bitnet"):
        reason = fused_unsupported_reason("relu", precision)
        assert reason.startswith("fused_linear_act=true supports activation relu, gelu, silu with precision fp32")
        assert precision in reason and "quantised" in reason
    assert "got activation 'tanh'" in fused_unsupported_reason("tanh", "fp32")
    with pytest.raises(ValueError, match="fused_linear_act=true supports activation relu, gelu, silu"):
        FusedLinearAct(nn.Linear(4, 4), "tanh")
    with pytest.raises(ValueError, match="got precision"):
        FusedLinearAct(nn.Linear(4, 4).to(torch.float64), "relu")  # oneDNN has no f64 inner product
    with pytest.raises(ValueError, match="supports activation"):
        fusion_evidence("tanh")


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_tiny_mlp_trains_like_the_unfused_one(activation):
    def train(fused: bool) -> list[float]:
        torch.manual_seed(0)
        up, down = nn.Linear(16, 64, bias=False), nn.Linear(64, 4, bias=False)
        first = FusedLinearAct(up, activation) if fused else nn.Sequential(up, UNFUSED[activation]())
        optimizer = torch.optim.AdamW([*up.parameters(), *down.parameters()], lr=1e-2)
        data = torch.Generator().manual_seed(1)
        x, target = torch.randn(128, 16, generator=data), torch.randn(128, 4, generator=data)
        losses = []
        for _ in range(30):
            loss = nn.functional.mse_loss(down(first(x)), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return losses

    unfused, fused = train(False), train(True)
    assert fused[-1] < 0.8 * fused[0]
    assert fused[:5] == pytest.approx(unfused[:5], rel=1e-5)
    assert fused == pytest.approx(unfused, rel=1e-3)


def test_compiles_with_inductor():
    # Inductor's own _linear_pointwise lowering wants a frozen weight: the op must stay opaque to it
    torch.manual_seed(0)
    up, down = nn.Linear(16, 32, bias=False), nn.Linear(32, 4, bias=False)
    fused = FusedLinearAct(up, "gelu")
    x = torch.randn(8, 16)
    expected = down(fused(x))
    expected.sum().backward()
    expected_grad, up.weight.grad = up.weight.grad, None
    got = torch.compile(lambda t: down(fused(t)))(x)
    got.sum().backward()
    torch.testing.assert_close(got, expected, **TOLERANCE[torch.float32])
    torch.testing.assert_close(up.weight.grad, expected_grad, **TOLERANCE[torch.float32])
