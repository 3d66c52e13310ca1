"""The timing protocol: one cold step, warm-up steps, then measured steps, each phase timed apart.

Only training steps are inside the timed region: batches are prepared before it, losses are read
after it (through the trainer, trainables/trainer.py). CPU kernels in eager PyTorch run synchronously,
so a perf_counter reading between two phases is the end of the first phase. A trainer whose framework
fuses forward, backward and update (FUSED_STEP) is timed per step only: its phase columns are None,
never a guessed split, and `phase_split` says why. The garbage collector is paused while measuring so
a collection of Python objects does not land inside one step.
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass, field

TIMING_METHOD = (
    "time.perf_counter around forward, backward and optimizer phases of each step; gc paused while measuring"
)
FUSED_TIMING_METHOD = "time.perf_counter around each fused training step; gc paused while measuring"
PHASES = ("forward", "backward", "optimizer")
PHASES_MEASURED = "measured"
PHASES_FUSED = "fused: forward, backward and optimizer update run in one call, not timed apart"
MIN_MEASURED_STEPS = 3
STOP_STEPS, STOP_SECONDS = "measure_steps", "measure_seconds"  # stop_reason: which budget ended the measurement


@dataclass
class StepTimes:
    total: list[float] = field(default_factory=list)
    forward: list[float] = field(default_factory=list)
    backward: list[float] = field(default_factory=list)
    optimizer: list[float] = field(default_factory=list)
    losses: list = field(default_factory=list)


def run_step(trainer, micro_batches, times: StepTimes) -> None:
    forward = backward = 0.0
    step_start = time.perf_counter()
    loss_sum = None
    for inputs, targets in micro_batches:
        t0 = time.perf_counter()
        loss = trainer.forward(inputs, targets)
        t1 = time.perf_counter()
        trainer.backward(loss)
        t2 = time.perf_counter()
        forward += t1 - t0
        backward += t2 - t1
        kept = trainer.detach(loss)
        loss_sum = kept if loss_sum is None else loss_sum + kept
    t3 = time.perf_counter()
    trainer.optimizer_step()
    end = time.perf_counter()
    times.total.append(end - step_start)
    times.forward.append(forward)
    times.backward.append(backward)
    times.optimizer.append(end - t3)
    times.losses.append(loss_sum)


def run_fused_step(trainer, micro_batches, times: StepTimes) -> None:
    step_start = time.perf_counter()
    loss = trainer.step(micro_batches)
    times.total.append(time.perf_counter() - step_start)
    times.losses.append(loss)


def _std(values: list[float]) -> float:
    """Sample standard deviation; NaN for one value, which says nothing about spread (0 would claim none)."""
    return statistics.stdev(values) if len(values) > 1 else float("nan")


def _stats(prefix: str, values: list[float]) -> dict:
    mean = statistics.fmean(values)
    std = _std(values)
    return {
        f"{prefix}_median_s": statistics.median(values),
        f"{prefix}_mean_s": mean,
        f"{prefix}_std_s": std,
        f"{prefix}_cv": std / mean if mean > 0 else float("nan"),
        f"{prefix}_min_s": min(values),
        f"{prefix}_max_s": max(values),
    }


def _phase_stats(measured: StepTimes, *, fused: bool) -> dict:
    if fused:  # one call ran all three phases: no split to report, and none guessed
        return {f"{phase}{suffix}": None for phase in PHASES for suffix in ("_s", "_std_s")} | {
            "phase_split": PHASES_FUSED
        }
    result = {}
    for phase in PHASES:
        values = getattr(measured, phase)
        result[f"{phase}_s"] = statistics.fmean(values)
        result[f"{phase}_std_s"] = _std(values)
    return result | {"phase_split": PHASES_MEASURED}


def measure(
    trainer, batches, *, grad_accum: int, warmup_steps: int, measure_steps: int, measure_seconds: float, probe=None
) -> dict:
    """Run the protocol; `batches` is a list of micro-batches reused cyclically. `probe` (start(), stop() -> dict,
    e.g. hwctl.telemetry.Probes of the energy, frequency and contention probes) brackets exactly the measured steps.
    Measuring stops after measure_steps, or once measure_seconds have passed and MIN_MEASURED_STEPS ran, whichever
    comes first; `stop_reason` says which."""

    def micro_batches(step: int):
        return [batches[(step * grad_accum + i) % len(batches)] for i in range(grad_accum)]

    take_step = run_fused_step if trainer.FUSED_STEP else run_step
    cold, warm, measured = StepTimes(), StepTimes(), StepTimes()
    take_step(trainer, micro_batches(0), cold)
    for step in range(1, 1 + warmup_steps):
        take_step(trainer, micro_batches(step), warm)

    gc.collect()
    gc.disable()
    probed = {}
    try:
        first = 1 + warmup_steps
        if probe is not None:
            probe.start()
        started = time.perf_counter()
        while True:
            take_step(trainer, micro_batches(first + len(measured.total)), measured)
            done = len(measured.total)
            elapsed = time.perf_counter() - started
            if done >= measure_steps:
                stop_reason = STOP_STEPS
                break
            if measure_seconds > 0 and elapsed >= measure_seconds and done >= MIN_MEASURED_STEPS:
                stop_reason = STOP_SECONDS
                break
        if probe is not None:
            probed = probe.stop()
    finally:
        gc.enable()

    result = _stats("step_time", measured.total) | _phase_stats(measured, fused=trainer.FUSED_STEP)
    result.update(
        time_to_first_step_s=cold.total[0],
        warmup_steps_run=warmup_steps,
        measure_steps_run=len(measured.total),
        measured_region_s=sum(measured.total),
        timed_region_s=sum(cold.total) + sum(warm.total) + sum(measured.total),
        loss_first=trainer.loss_value(cold.losses[0]),
        loss_last=trainer.loss_value(measured.losses[-1]),
        step_times_s=list(measured.total),
        stop_reason=stop_reason,
        timing_method=FUSED_TIMING_METHOD if trainer.FUSED_STEP else TIMING_METHOD,
    )
    return result | probed
