"""Where a trial sits under its node's roofline: the roof min(peak, intensity x bandwidth) at the step's arithmetic
intensity, and the share of it the step attained (Williams, Waterman and Patterson, "Roofline", CACM 2009).

FLOPs are flops.py's executed matmul FLOPs, bytes traffic.py's modelled memory traffic, the peak the trial's own
matmul peak (`peak_gflops`, what mfu divides by) and the bandwidth the triad bandwidth at the trial's threads
(hwctl/microbench.memory_bandwidth_gbs, cached per fingerprint). Pure arithmetic: the worker calls it after the timed
region, and the report calls it again for rows of stores older than these columns.

Per phase (where the trainer times forward, backward and optimizer apart; jit-fused trainers leave them None):
forward FLOPs are the linear layers' 2 per weight per token and the attention's q.k and p.v; backward the rest of
flops_per_step; the optimizer's matmul FLOPs are 0 (flops.py counts no element-wise work), so its intensity is 0, it
is memory-bound, and its fraction is the bandwidth it attained over the triad's: optimizer_bytes / optimizer_s /
bandwidth. Phase times are the means over the measured steps (forward_s ...), the step's the median.
"""

from __future__ import annotations

from trainables.flops import attention_kernel, flops_per_step, linear_flops_per_token, score_pairs_per_sequence
from trainables.traffic import step_traffic

PHASES = ("forward", "backward", "optimizer")
COMPUTE, MEMORY = "compute", "memory"
ROOFLINE_METHOD = (
    "roof = min(peak_gflops, arithmetic_intensity x triad bandwidth at the trial's threads); FLOPs from "
    "trainables/flops.py, bytes from the traffic model of trainables/traffic.py"
)


def forward_flops_per_step(cfg) -> float:
    """The forward share of flops_per_step: 2 FLOPs per weight per token, and q.k and p.v once."""
    attention = 2 * 2 * cfg.attn_dim * score_pairs_per_sequence(cfg) * cfg.depth
    return linear_flops_per_token(cfg) * cfg.tokens_per_step + attention * cfg.batch_size * cfg.grad_accum


def roof(intensity: float, peak_gflops: float, bandwidth_gbs: float) -> tuple[float, str]:
    """(the attainable GFLOP/s at this intensity, which roof binds: compute or memory)."""
    memory_roof = intensity * bandwidth_gbs
    return (peak_gflops, COMPUTE) if memory_roof >= peak_gflops else (memory_roof, MEMORY)


def _place(prefix: str, flops: float, nbytes: float, seconds, peak_gflops: float, bandwidth_gbs: float) -> dict:
    """One region's columns: its bytes, intensity, roof, fraction and bound (None where it was not timed)."""
    intensity = flops / nbytes
    roof_gflops, bound = roof(intensity, peak_gflops, bandwidth_gbs)
    if seconds is None or seconds <= 0:
        fraction = None
    elif flops > 0:
        fraction = flops / seconds / 1e9 / roof_gflops
    else:  # no matmul FLOPs: the share of the bandwidth the region's bytes attained
        fraction = nbytes / seconds / 1e9 / bandwidth_gbs
    return {
        f"{prefix}roofline_bytes": nbytes,
        f"{prefix}arithmetic_intensity": intensity,
        f"{prefix}roofline_gflops": roof_gflops,
        f"{prefix}roofline_fraction": fraction,
        f"{prefix}roofline_bound": bound,
    }


def roofline_values(
    cfg, step_time_s: float, phase_times: dict | None, peak_gflops: float, bandwidth_gbs: float
) -> dict:
    """The roofline columns of one trial from its config, median step time, phase times ({'forward': s, ...} or
    None where the step is fused), matmul peak and triad bandwidth (GB/s)."""
    traffic = step_traffic(cfg)
    flops = flops_per_step(cfg)
    row = {"roofline_bandwidth_gbs": bandwidth_gbs, "roofline_method": ROOFLINE_METHOD}
    row |= _place("", flops, traffic.total_bytes, step_time_s, peak_gflops, bandwidth_gbs)
    forward = forward_flops_per_step(cfg)
    regions = {
        "forward": (forward, traffic.forward_bytes),
        "backward": (flops - forward, traffic.backward_bytes),
        "optimizer": (0.0, traffic.optimizer_bytes),
    }
    times = phase_times or {}
    for phase, (phase_flops, nbytes) in regions.items():
        row |= _place(f"{phase}_", phase_flops, nbytes, times.get(phase), peak_gflops, bandwidth_gbs)
        if times.get(phase) is None:  # fused: no split measured, so no phase figures at all
            row |= {key: None for key in row if key.startswith(f"{phase}_")}
    return row


def roofline_from_row(row: dict, bandwidth_gbs: float | None = None) -> dict | None:
    """The roofline columns for a stored row that lacks them (a store older than the columns), from its config keys,
    step and phase times, peak and the bandwidth given (else the row's own, else hw_mem_bw_gbs, the node's triad at
    all its cores); None where a needed value is missing."""
    from trainables.config import TrialConfig
    from trainables.trial_config import FIELD_TYPES

    bandwidth = bandwidth_gbs or row.get("roofline_bandwidth_gbs") or row.get("hw_mem_bw_gbs")
    step, peak = row.get("step_time_median_s"), row.get("peak_gflops")
    if not bandwidth or not step or not peak:
        return None
    try:
        cfg = TrialConfig(**{key: row[key] for key in FIELD_TYPES if key in row and row[key] is not None})
        attention_kernel(cfg)  # the framework must still be registered
        phases = {phase: row.get(f"{phase}_s") for phase in PHASES}
        return roofline_values(cfg, step, phases, peak, bandwidth)
    except (TypeError, ValueError, KeyError, ImportError):  # a config this code can no longer read
        return None
