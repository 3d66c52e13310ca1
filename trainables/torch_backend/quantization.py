"""Quantisation-aware training (precision q8, q4, bitnet) with torchao, on the fp32 model before its optimizer exists.

Only the transformer blocks' Linears (attn.qkv, attn.proj, mlp.up, mlp.down) are converted. The output projection
shares its Parameter with the token embedding (GPT-2 tying): converting lm_head would swap or wrap that Parameter and
untie it, so it, the embeddings and the LayerNorms stay fp32. Training then runs plain AdamW over the same fp32
master weights; the quantisers see them on every forward and pass gradients straight through.

q8 and q4 are fake-quantised (quantise then dequantise in fp32 before an fp32 GEMM): on CPU they cost extra time on
top of fp32 and say nothing about int8 inference speed. bitnet runs its forward GEMM in int8 (torch._int_mm, whose
CPU speed depends on the CPU's int8 dot-product instructions) and its backward in fp32.

torchao is imported on first use (about 2 s): fp32 trials and readers of QUANTIZED do not pay for it.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import torch
from torch import nn

from trainables.torch_backend.support import Q4_GROUP_SIZE as GROUP_SIZE
from trainables.torch_backend.support import QUANTIZED

KEPT_FP32 = "wte/lm_head (tied), wpe, LayerNorms"
NOTES = {
    "q8": "q8 trains with int8 per-channel weights and int8 per-token activations fake-quantised by torchao QAT "
    "(fp32 GEMMs plus quantise/dequantise work, straight-through gradients), so it measures the cost of QAT on "
    "this CPU, not int8 inference speed.",
    "q4": f"q4 trains with int4 weights in groups of {GROUP_SIZE} and int8 per-token activations fake-quantised by "
    "torchao QAT (fp32 GEMMs plus quantise/dequantise work, straight-through gradients), so it measures the cost "
    "of QAT on this CPU, not int4 inference speed.",
    "bitnet": "bitnet trains BitNet b1.58 with torchao (ternary weights with a per-tensor absmean scale, int8 "
    "per-row activations, forward GEMM in int8 through torch._int_mm, whose CPU speed depends on the CPU's int8 "
    "dot-product instructions, backward in fp32), so it measures torchao's training path, not a ternary kernel.",
}


def precision_note(precision: str) -> str:
    """One README sentence on what a quantised precision computes; ValueError for any other precision."""
    if precision not in NOTES:
        raise ValueError(f"precision {precision!r} is not quantised; expected one of {QUANTIZED}")
    return NOTES[precision]


def _torchao_config(precision: str) -> Any:
    from torchao.prototype.quantized_training import bitnet_training
    from torchao.quantization.qat import IntxFakeQuantizeConfig, QATConfig

    if precision == "bitnet":
        return bitnet_training()
    weight = (
        IntxFakeQuantizeConfig(torch.int8, "per_channel")
        if precision == "q8"
        else IntxFakeQuantizeConfig(torch.int4, group_size=GROUP_SIZE)
    )
    activation = IntxFakeQuantizeConfig(torch.int8, "per_token", is_symmetric=False)
    return QATConfig(activation_config=activation, weight_config=weight, step="prepare")


def _is_target(module: nn.Module, fqn: str) -> bool:
    # lm_head is left out on purpose: its weight is wte's Parameter
    return isinstance(module, nn.Linear) and fqn.startswith("blocks.")


def _describe(value: Any) -> Any:
    """A JSON-able reading of a torchao config object: class names, dtypes and enums by name, dataclass fields."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    if isinstance(value, enum.Enum):
        return value.name
    fields = dataclasses.fields(value) if dataclasses.is_dataclass(value) else ()
    return {"class": type(value).__name__} | {f.name: _describe(getattr(value, f.name)) for f in fields}


def _spec(config: Any) -> str:
    from torchao.quantization.granularity import PerAxis, PerGroup, PerToken

    granularity = config.granularity
    if isinstance(granularity, PerGroup):
        where = f"group {granularity.group_size}"
    elif isinstance(granularity, PerAxis):
        where = "per-channel"
    elif isinstance(granularity, PerToken):
        where = "per-token"
    else:
        where = type(granularity).__name__
    symmetry = "symmetric" if config.is_symmetric else "asymmetric"
    return f"{_describe(config.dtype)} {where} {symmetry}"


def _summary(config: Any) -> str:
    from torchao.quantization.qat import QATConfig

    if isinstance(config, QATConfig):
        return (
            f"torchao QAT prepare: weights {_spec(config.weight_config)}, activations {_spec(config.activation_config)}"
            " (fake-quantised, straight-through gradients, fp32 master weights)"
        )
    return (
        "torchao BitNet b1.58 training: weights ternary with per-tensor absmean scale, activations int8 per-row "
        "absmax symmetric, int8 forward GEMM (torch._int_mm on CPU), straight-through gradients, fp32 master weights"
    )


def _converted(module: nn.Module) -> bool:
    from torchao.prototype.quantized_training import BitNetTrainingLinearWeight
    from torchao.quantization.qat import FakeQuantizedLinear

    if isinstance(module, FakeQuantizedLinear):
        return module.weight_fake_quantizer is not None and module.activation_fake_quantizer is not None
    return isinstance(module.weight, BitNetTrainingLinearWeight)


def _module_name(module: nn.Module) -> str:
    # bitnet keeps nn.Linear and wraps its weight: name the weight's class too
    name = type(module).__name__
    weight = type(module.weight)
    return name if weight in (nn.Parameter, torch.Tensor) else f"{name}[weight: {weight.__name__}]"


def apply_quantized_training(model: nn.Module, precision: str) -> dict:
    """Convert the blocks' Linears of an fp32 `model` in place for quantisation-aware training and return the
    row's facts: quantization, quantization_config, quantized_layers, quantized_modules, torchao_version.

    Raises ValueError for an unknown precision, or for q4 when a target Linear's in_features is not a multiple of
    GROUP_SIZE (the message names each such layer), and RuntimeError when a target was not converted or the
    lm_head/wte tying broke. Call before building the optimizer: bitnet replaces the weight Parameters.
    """
    if precision not in QUANTIZED:
        raise ValueError(f"precision {precision!r} is not quantised; expected one of {QUANTIZED}")
    targets = {name: module for name, module in model.named_modules() if _is_target(module, name)}
    if not targets:
        raise RuntimeError("no nn.Linear under blocks.* to quantise")
    if precision == "q4":
        bad = [f"{name} (in_features={m.in_features})" for name, m in targets.items() if m.in_features % GROUP_SIZE]
        if bad:
            raise ValueError(
                f"precision=q4 needs every block Linear's in_features to be a multiple of the int4 group size "
                f"{GROUP_SIZE}; not: {', '.join(bad)}"
            )
    import torchao
    from torchao.quantization import quantize_

    # bitnet's transform makes a fresh Parameter with requires_grad=True: keep frozen layers frozen
    requires_grad = {name: module.weight.requires_grad for name, module in targets.items()}
    config = _torchao_config(precision)
    quantize_(model, config, filter_fn=_is_target)

    converted = {name: model.get_submodule(name) for name in targets}
    missed = [name for name, module in converted.items() if not _converted(module)]
    if missed:
        raise RuntimeError(f"torchao left {len(missed)} of {len(targets)} block Linears unconverted: {missed}")
    for name, module in converted.items():
        module.weight.requires_grad_(requires_grad[name])
    if model.lm_head.weight is not model.wte.weight:
        raise RuntimeError("quantisation untied lm_head from wte")
    return {
        "quantization": f"{_summary(config)}; {KEPT_FP32} kept fp32",
        "quantization_config": {
            "config": _describe(config),
            "applied_to": "nn.Linear in blocks.* (attn.qkv, attn.proj, mlp.up, mlp.down)",
            "kept_fp32": KEPT_FP32,
        },
        "quantized_layers": len(converted),
        "quantized_modules": ", ".join(sorted({_module_name(module) for module in converted.values()})),
        "torchao_version": torchao.__version__,
    }
