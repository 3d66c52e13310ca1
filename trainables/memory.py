"""How much memory a trial needs to train, from its config alone: pure arithmetic, importable without torch.

A config this node cannot hold becomes an `unsupported` row with the memory it would need
(`memory_unsupported_reason`) instead of a worker the kernel OOM-kills or the launcher's memory cap kills half-way.

The estimate is the peak resident memory (RSS) of the trial's worker process, the figure its row records as
`peak_rss_mb` (`ru_maxrss`, MiB), as the sum of:

- weights:          every parameter of trainables/weights.parameter_shapes (wte tied to lm_head, counted once) in the
                    dtype the trainer keeps them: 2 bytes for precision=bf16 (the model is cast), else 4 (fp32, mixed:
                    autocast keeps fp32 weights; q8/q4/bitnet: torchao QAT keeps fp32 master weights).
- gradients:        one per trainable parameter, in the parameter's dtype. freeze_layers=N: the first N blocks have
                    requires_grad=False (trainables/torch_backend/optimizers.freeze_layers), so no gradient.
                    grad_accum > 1 counts a second copy: from the second micro-batch on, autograd makes each new
                    gradient beside the accumulated one and adds it in; those freed gradient-sized blocks stay resident
                    between the saved activations (measured: depth 6 width 512 batch 4 peaked 105 MiB, 1.2 gradient
                    copies, higher with grad_accum=2 than with 1; per-phase HWM resets put the growth in the second
                    micro-batch).
- optimizer_state:  per trainable parameter, in the parameter's dtype (torch makes exp_avg, exp_avg_sq and the momentum
                    buffer with zeros_like(param): bf16 for bf16 parameters; measured, torch 2.13):
                    adamw 2 (exp_avg, exp_avg_sq); sgd 1 (momentum 0.9); lookahead 3 (AdamW's 2 + the slow weights);
                    lamb 2 (exp_avg, exp_avg_sq). Step counters (one fp32 scalar per tensor) are left out.
- optimizer_transient: lamb only: pytorch_optimizer's foreach step makes update temporaries, measured in-process
                    with HWM resets around step() at 0.70-0.80 of one weight copy (model=small, fp32 and bf16; counted
                    as 1). They exist only inside step(), after backward has freed the activations, so they count
                    against the activations, not beside them (measured: lamb peaked 4% below adamw at depth 6 width 512
                    batch 4, where activations are 3x a weight copy).
- activations:      what autograd saves for backward over one micro-batch (trainables/activation_memory.py: derived op
                    by op, and checked tensor by tensor against torch.autograd.graph.saved_tensors_hooks in
                    tests/test_memory.py), plus the transient tensors alive at the peak (the cross-entropy's
                    gradients, one layer's attention scores).
- buffers:          the attention masks (bool, L x L per block).
- allocator_slack:  what glibc malloc (allocator=default, a framework declaring glibc_heap_slack: torch) keeps resident
                    beyond that sum (below); 0 with jemalloc or tcmalloc.
- runtime:          the worker's own footprint with a near-empty model: interpreter, torch and the libraries it loads,
                    OpenMP/MKL pools, the token stream; measured, in each framework's declaration (runtime_bytes).

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

from pathlib import Path

from trainables.activation_memory import (
    FP32,
    activation_bytes,
    element_bytes,
    parameter_counts,
    qat_saved_bytes,
    shapes,
)
from trainables.trainer import framework_support

GIB = 2**30
MIB = 2**20

# runtime: the worker's resident footprint apart from the model, in each framework's declaration (runtime_bytes, and
# compile_runtime_bytes for what a compiler adds to it): peak_rss_mb of a trial of a near-empty model minus this
# module's estimate of that model (11.9 MiB: weights, gradients, AdamW state, activations with the logits). Measured 2026-12-06
# on the 2-core development VM (AMD EPYC, 24 GiB, torch 2.13.0+cpu, jax 0.10.2, numpy 2.4.6, glibc malloc, threads=2)
# with
#   venv/bin/python bench.py trial depth=1 width=64 heads=1 seq_len=32 batch_size=1 measure_steps=3 warmup_steps=1 \
#       measure_seconds=0 --json --dataset-offline [framework=jax | framework=numpy | compile=inductor]
# peak_rss_mb: torch eager 345.3 / 345.6 / 346.3 (bf16 346.6, mixed 351.1), inductor 433.0, jax 351.6, numpy 88.2.

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


def estimate_training_memory(cfg) -> dict[str, int]:
    """Bytes: weights, gradients, optimizer_state, optimizer_transient, activations, buffers, allocator_slack, runtime,
    build_peak and total (module docstring)."""
    counts, e, d = parameter_counts(cfg), element_bytes(cfg), shapes(cfg)
    weights = counts["total"] * e["param"]
    gradients = counts["trainable"] * e["param"] * (2 if cfg.grad_accum > 1 else 1)
    optimizer_state = OPTIMIZER_STATE_COPIES[cfg.optimizer] * counts["trainable"] * e["param"]
    optimizer_transient = OPTIMIZER_TRANSIENT_COPIES.get(cfg.optimizer, 0) * counts["trainable"] * e["param"]
    activations = activation_bytes(cfg)
    buffers = cfg.depth * d["L"] * d["L"]  # each block's bool attention mask
    support = framework_support(cfg.framework)
    runtime = support.runtime_bytes + support.compile_runtime_bytes.get(cfg.compile, 0)
    build_peak = 2 * counts["total"] * FP32  # fp32 model + NumPy initial weights while they are copied in
    allocator_slack = 0
    if cfg.allocator == "default" and support.glibc_heap_slack:  # glibc malloc: module docstring
        one_copy = counts["trainable"] * e["param"]
        allocator_slack = max(0, int(GLIBC_GRADIENT_HOLES * one_copy) - max(activations, optimizer_transient))
        if cfg.precision in ("q8", "q4"):  # the fake quantisation's temporaries, kept resident
            allocator_slack += qat_saved_bytes(cfg)
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
