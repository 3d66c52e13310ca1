"""What the step-time model reads: a config's work per class of operation, and a node's roofs.

Work per optimizer step, from the config alone (so a config that was never measured has it too):
- matmul: the linear layers' FLOPs (trainables/flops.py: 6 per weight per token, forward and backward);
- attention: the score matmuls' FLOPs as the kernel executes them (flops.py: dense for manual and the math fallback,
  the flash kernel's 512-key blocks and its recomputing backward for sdpa);
- elementwise: the bytes the element-wise ops move (norms, activations, residual adds, dropout, the loss, layout
  copies; trainables/traffic.py) plus the dense attention scores written and re-read (0 under the flash kernel,
  which keeps them in cache), since eager softmax, mask and scale are memory-bound passes over them;
- optimizer: the optimizer step's bytes (traffic.py: 7 passes over the parameters for AdamW);
- layer: one per transformer block per micro-batch (depth x grad_accum): a fixed cost per layer pass (the Python
  dispatch, kernel launches and thread-pool wake-ups of the dozen ops of a block), which no roof scales.

Roofs: the matmul classes divide by the node's matmul peak (GFLOP/s at the trial's dtype, threads and ISA cap), the
memory classes by its triad bandwidth (GB/s). `seconds_at_roof` is the vector of time each class would take at 100%
of its roof (the layer class: its count); the fitted efficiencies scale it (fit.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from trainables.config import FIELD_TYPES, TrialConfig, build_config
from trainables.flops import attention_flops_per_sequence, linear_flops_per_token
from trainables.traffic import step_traffic

CLASSES = ("matmul", "attention", "elementwise", "optimizer", "layer")
ROOF_OF = {"matmul": "matmul", "attention": "matmul", "elementwise": "memory", "optimizer": "memory", "layer": None}
WORK_UNITS = {
    "matmul": "FLOP",
    "attention": "FLOP",
    "elementwise": "byte",
    "optimizer": "byte",
    "layer": "layer pass",
}
PREDICT_DATASET = "offline"  # what a trial trains on does not change its step time; an auto would look up the hub


class PredictError(LookupError):
    """A prediction the store cannot support: no rows for the framework/precision, a config outside what the fit
    covers, a roof that was never measured. The message names the key, the value and what is covered."""


@dataclass(frozen=True)
class Roofs:
    """A node's roofs for one dtype, thread count and ISA cap."""

    matmul_gflops: float
    bandwidth_gbs: float
    source: str  # where they came from, for the output

    def __post_init__(self):
        for name in ("matmul_gflops", "bandwidth_gbs"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise PredictError(f"{name}={value!r} from {self.source}: a roof must be a positive number")


def config_from_row(row: dict) -> TrialConfig:
    """A stored row's config: it was validated when it ran and its autos are resolved in the row, so it is built as
    stored (trainables/roofline.roofline_from_row does the same); a key the row lacks keeps its default."""
    return TrialConfig(**{key: row[key] for key in FIELD_TYPES if row.get(key) is not None})


def config_from_values(values: dict) -> TrialConfig:
    """A config from KEY=VALUE strings or plan-like values, validated as `bench.py trial` validates it; the dataset
    defaults to the offline corpus (it changes the text, not the step time, and an auto would ask the hub)."""
    return build_config({"dataset": PREDICT_DATASET} | values)


def work_of(cfg: TrialConfig) -> dict[str, float]:
    """Work per optimizer step of each class (units: WORK_UNITS)."""
    traffic = step_traffic(cfg)
    sequences = cfg.batch_size * cfg.grad_accum
    return {
        "matmul": float(3 * linear_flops_per_token(cfg) * cfg.tokens_per_step),
        "attention": float(attention_flops_per_sequence(cfg) * sequences),
        "elementwise": float(traffic.elementwise_bytes + traffic.attention_bytes),
        "optimizer": float(traffic.optimizer_bytes),
        "layer": float(cfg.depth * cfg.grad_accum),
    }


def seconds_at_roof(work: dict[str, float], roofs: Roofs) -> np.ndarray:
    """Per class, the seconds its work takes at 100% of its roof (the layer class: its count of layer passes)."""
    rate = {"matmul": roofs.matmul_gflops * 1e9, "memory": roofs.bandwidth_gbs * 1e9, None: 1.0}
    return np.array([work[c] / rate[ROOF_OF[c]] for c in CLASSES])


def peak_dtype_of(cfg: TrialConfig) -> str:
    """The dtype of the matmul peak a config's matmuls are measured against where no row says (peak_dtype): bf16 for
    bf16 and mixed precision, fp32 otherwise (quantisation-aware training runs fp32 matmuls)."""
    return "bf16" if cfg.precision in ("bf16", "mixed") else "fp32"
