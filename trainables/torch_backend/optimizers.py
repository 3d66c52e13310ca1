"""The torch trainer's optimizer axis (`optimizer=`) and layer freezing (`freeze_layers=`).

Hyper-parameters: lr is always cfg.learning_rate; betas, eps and weight_decay are weights.ADAMW's but for SGD's decay.
- adamw:     torch.optim.AdamW(fused=True): one kernel over all parameters, as the trainer always had.
- sgd:       torch.optim.SGD, momentum 0.9, no Nesterov, weight_decay 1e-4 (SGD's decay is L2 added to the gradient
             and amplified ~10x by momentum, so AdamW's 0.1 would shrink weights far too fast at SGD's learning rates;
             1e-4 is the classic SGD value). foreach=True, not fused: in torch 2.13 the CPU fused SGD kernel leaves
             bf16 parameters unchanged (pytorch/pytorch#191763), and foreach works for every precision.
- lamb:      pytorch_optimizer.Lamb, ADAMW's betas, eps and decoupled weight decay; Adam's moments with a per-tensor
             trust ratio min(|w|, 10) / |update|; foreach=True (the batched path, also its default on CPU).
- lookahead: pytorch_optimizer.Lookahead(k=5, alpha=0.5) around the fused AdamW above: every 5th step also pulls the
             weights halfway back to the slow copy (slow + alpha * (fast - slow)) and stores them as the new slow
             copy. That extra work is part of the step it happens in, and the slow copy costs one more
             weight-sized tensor per parameter.

Every optimizer works with bf16 parameters (precision=bf16); its state then is bf16 too (AdamW's step counters stay
fp32 scalars).

Freezing the first N blocks removes their weight gradients (the weight-gradient GEMMs and the optimizer work), not the
backward pass through them: the embeddings below them still train, so the input gradients still flow through.
"""

from __future__ import annotations

import torch
from torch import nn

from trainables.weights import ADAMW

SGD = {"momentum": 0.9, "weight_decay": 1e-4, "nesterov": False}
LOOKAHEAD = {"k": 5, "alpha": 0.5}
# per-run counters kept in param_groups, not settings
_RUNTIME_KEYS = ("params", "step", "counter")


def freeze_layers(model: nn.Module, n: int) -> dict:
    """Stop gradients for every parameter of model.blocks[:n]; embeddings, ln_f and the tied lm_head keep training."""
    if not 0 <= n < len(model.blocks):
        raise ValueError(f"freeze_layers={n}: must be in 0..{len(model.blocks) - 1} (at least one block must train)")
    for block in model.blocks[:n]:
        block.requires_grad_(False)
    # model.parameters() yields the tied wte/lm_head weight once, so the two counts add up to num_params()
    params = list(model.parameters())
    return {
        "frozen_layers": list(range(n)),
        "frozen_params": sum(p.numel() for p in params if not p.requires_grad),
        "trainable_params": sum(p.numel() for p in params if p.requires_grad),
    }


def build_optimizer(cfg, model: nn.Module) -> tuple[torch.optim.Optimizer, dict]:
    """cfg.optimizer over the parameters that still require grad (frozen ones get no state), and the facts that say
    what it is: its class and the hyper-parameters read back from it."""
    params = [p for p in model.parameters() if p.requires_grad]
    lr = cfg.learning_rate
    if cfg.optimizer == "adamw":
        optimizer = _adamw(params, lr)
    elif cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=lr, foreach=True, **SGD)
    elif cfg.optimizer == "lamb":
        from pytorch_optimizer import Lamb  # imported here: ~1.5 s that only the trials using it should pay

        optimizer = Lamb(params, lr=lr, foreach=True, **ADAMW)
    elif cfg.optimizer == "lookahead":
        from pytorch_optimizer import Lookahead

        optimizer = Lookahead(_adamw(params, lr), **LOOKAHEAD)
    else:
        raise ValueError(f"optimizer={cfg.optimizer!r}: expected one of adamw, sgd, lamb, lookahead")
    return optimizer, {"optimizer_class": _class_name(optimizer), "optimizer_settings": _settings(optimizer)}


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of every tensor the optimizer keeps per parameter (moments, momentum, step counters, Lookahead's slow
    weights, its inner optimizer's state); empty until the first step for all but Lookahead's slow weights."""
    seen: set[int] = set()
    total = 0
    for opt in _chain(optimizer):
        for state in opt.state.values():
            for value in state.values():
                if isinstance(value, torch.Tensor) and id(value) not in seen:
                    seen.add(id(value))
                    total += value.numel() * value.element_size()
    return total


def _adamw(params: list[nn.Parameter], lr: float) -> torch.optim.AdamW:
    # fused AdamW: one kernel over all parameters instead of a chain of element-wise ops
    return torch.optim.AdamW(params, lr=lr, fused=True, **ADAMW)


def _chain(optimizer: torch.optim.Optimizer) -> list[torch.optim.Optimizer]:
    """The optimizer and the ones it wraps (Lookahead keeps its base optimizer in .optimizer)."""
    chain = [optimizer]
    while isinstance(getattr(chain[-1], "optimizer", None), torch.optim.Optimizer):
        chain.append(chain[-1].optimizer)
    return chain


def _class_name(optimizer: torch.optim.Optimizer) -> str:
    outer, *inner = (f"{type(opt).__module__}.{type(opt).__qualname__}" for opt in _chain(optimizer))
    return outer + "".join(f"({name}" for name in inner) + ")" * len(inner)


def _settings(optimizer: torch.optim.Optimizer) -> dict:
    """The first param group's hyper-parameters as JSON values, plus Lookahead's k and alpha."""
    settings = {}
    if type(optimizer).__name__ == "Lookahead":  # pytorch_optimizer's, not imported unless used
        settings |= {"k": optimizer.k, "alpha": optimizer.alpha, "pullback_momentum": optimizer.pullback_momentum}
    group = optimizer.param_groups[0]  # Lookahead's are its base optimizer's
    for key, value in group.items():
        if key not in _RUNTIME_KEYS:
            settings.setdefault(key, _json_value(value))
    return settings


def _json_value(value):
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, (tuple, list)):
        return [_json_value(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)
