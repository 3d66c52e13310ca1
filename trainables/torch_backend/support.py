"""What the torch trainer can run, and what its worker needs before it starts: torch's declaration (no torch imported).

Config validation reads it in every process, the sweep's driver included; the launcher calls its hooks before each
worker starts. The trainer that runs it is trainables/torch_backend/trainer.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from trainables.support import MIB, FrameworkSupport, load_target
from trainables.torch_backend.compile_setup import (
    INDUCTOR_CACHE,
    INDUCTOR_COMPILES,
    compile_unsupported_reason,
    inductor_environment,
)

QUANTIZED = ("q8", "q4", "bitnet")  # quantisation-aware training (trainables/torch_backend/quantization.py)
# q4's weight group: each Linear's in_features must be a multiple (no fallback, a clear error)
Q4_GROUP_SIZE = 32
# loaded only for a config with fused_linear_act=true: it runs the fused kernel once, so it imports torch
FUSED_KERNEL_CHECK = "trainables.torch_backend.fused_linear_act:fused_unsupported_reason"
# loaded only for a config with a oneDNN blas: it runs the strict-fp32 GEMMs once under ONEDNN_VERBOSE
ONEDNN_CHECK = "trainables.torch_backend.onednn_fp32:onednn_unsupported_reason"


class TorchSupport(FrameworkSupport):
    def config_error(self, cfg) -> str | None:
        if cfg.fused_linear_act and cfg.precision in QUANTIZED:
            return (
                f"fused_linear_act=True cannot run with precision={cfg.precision!r}: the fused oneDNN kernel would "
                "bypass the fake-quantised Linear (use fp32, bf16 or mixed)"
            )
        if cfg.blas == "onednn-fp32":
            if cfg.precision != "fp32":
                return (
                    f"blas='onednn-fp32' runs fp32 GEMMs in oneDNN with strict fp32 math; precision={cfg.precision!r} "
                    "has no fp32 GEMMs to run (use precision=fp32, or blas=mkl)"
                )
            if cfg.fused_linear_act:
                return (
                    "blas='onednn-fp32' cannot run with fused_linear_act=True: the fused Linear's hand-written backward "
                    "runs ATen's matmuls, MKL's (use blas=onednn-bf16math or mkl, or fused_linear_act=false)"
                )
        if cfg.precision == "q4":  # torchao's int4 weights come in groups of 32 along each Linear's input
            inputs = {"width": cfg.width, "heads × head_dim": cfg.attn_dim, "the MLP hidden": cfg.mlp_hidden}
            odd = [f"{name} {size}" for name, size in inputs.items() if size % Q4_GROUP_SIZE]
            if odd:
                return (
                    f"precision='q4' quantises weights in groups of {Q4_GROUP_SIZE} input features: {', '.join(odd)} "
                    f"must be multiples of {Q4_GROUP_SIZE}"
                )
        return None

    def worker_environment(self, cfg, inherited: Mapping[str, str]) -> dict[str, str]:
        # libgomp prints what it runs with as it loads: the row's omp_runtime (true leaves out GOMP_SPINCOUNT)
        env = {"OMP_DISPLAY_ENV": "verbose"}
        if cfg.blas == "onednn-fp32":  # oneDNN's default fpmath mode, which a user's variable could make bf16
            env["ONEDNN_DEFAULT_FPMATH_MODE"] = "STRICT"
        return env

    def compiler_environment(self, cfg, cache_dir: Path, cache: Path) -> dict[str, str]:
        return inductor_environment(cfg, cache_dir, cache)

    def unsupported_reason(self, cfg) -> str | None:
        if cfg.blas in ("onednn-fp32", "onednn-bf16math"):  # a torch without oneDNN, or oneDNN refusing strict fp32
            reason = load_target(ONEDNN_CHECK)(cfg.blas)
            if reason:
                return reason
        if cfg.fused_linear_act:  # whether this node's oneDNN runs the fused kernel in the trial's dtype
            reason = load_target(FUSED_KERNEL_CHECK)(cfg.activation, cfg.precision)
            if reason:
                return reason
        return compile_unsupported_reason(cfg)  # a C++ compiler, -march or vector width this node lacks


SUPPORT = TorchSupport(
    trainer="trainables.torch_backend.trainer:TorchTrainer",
    # aot_eager: graph capture and AOTAutograd without Inductor's code generation (the no-fusion compiled baseline)
    compile=("eager", *INDUCTOR_COMPILES, "aot_eager"),
    attn_backend=("sdpa", "manual"),
    # q8, q4, bitnet: quantisation-aware training with torchao (trainables/torch_backend/quantization.py)
    precision=("fp32", "bf16", "mixed", *QUANTIZED),
    optimizer=("adamw", "sgd", "lamb", "lookahead"),  # lamb, lookahead: trainables/torch_backend/optimizers.py
    # mkl: torch's fp32 GEMM (MKL SGEMM, seen in MKL_VERBOSE); onednn-fp32: every Linear's GEMMs (and manual
    # attention's) in oneDNN's inner product with strict fp32 math (torch_backend/onednn_fp32.py); onednn-bf16math:
    # torch.backends.mkldnn.matmul.fp32_precision = "bf16", which sends ATen's fp32 matmuls to oneDNN by letting it
    # compute in bf16 where the CPU has bf16 instructions. The row's onednn_math says what oneDNN computed in.
    blas=("mkl", "onednn-fp32", "onednn-bf16math"),
    blas_changes_numerics={"onednn-bf16math": "oneDNN may round fp32 operands to bf16 (fpmath mode bf16)"},
    # interop_threads: torch's inter-op pool; isa: the cap ATen, MKL and oneDNN read; the omp_* keys: OpenMP is
    # torch's thread pool (libgomp), while XLA and OpenBLAS run their own
    honours=frozenset(
        {
            "interop_threads",
            "isa",
            "fused_linear_act",
            "freeze_layers",
            "omp_proc_bind",
            "omp_places",
            "omp_wait",
            "gomp_spincount",
        }
    ),
    native_code_compiles=INDUCTOR_COMPILES,
    fusing_compiles=INDUCTOR_COMPILES,
    warm_cache_refusals={
        "aot_eager": "torch 2.13 keeps no compiled graph of aot_eager between processes (AOTAutograd caches only "
        "Inductor's), so there is no cache to warm"
    },
    compile_cache=INDUCTOR_CACHE,
    # measured as trainables/memory.py says: `import torch, torch._dynamo` alone is 301 MiB of RSS (89 MiB of it
    # file-backed library pages); the rest is the worker's other modules, the OpenMP/MKL threads and buffers after the
    # first steps. torchao (q8/q4/bitnet) adds ~13 MiB of imports and pytorch_optimizer (lamb/lookahead) ~4 MiB:
    # inside the margin, not added.
    runtime_bytes=334 * MIB,
    compile_runtime_bytes={"inductor": 87 * MIB},  # torch._inductor, its codegen and compiled kernels, in the worker
    glibc_heap_slack=True,
)
