"""What the jax trainer can run, and what its worker needs before it starts: jax's declaration (no jax imported).

Config validation reads it in every process, the sweep's driver included; the launcher calls its hooks before each
worker starts. The trainer that runs it is trainables/jax_backend/trainer.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from trainables.jax_backend.environment import (
    JAX_CACHE,
    XLA_BACKEND_FLAGS,
    compilation_cache_environment,
    framework_environment,
)
from trainables.support import MIB, FrameworkSupport


class JaxSupport(FrameworkSupport):
    def worker_environment(self, cfg, inherited: Mapping[str, str]) -> dict[str, str]:
        env = framework_environment(cfg)
        # a user's own XLA_FLAGS stay, before the trial's: XLA takes the last of a repeated flag
        env["XLA_FLAGS"] = " ".join(filter(None, [inherited.get("XLA_FLAGS"), env["XLA_FLAGS"]]))
        return env

    def compiler_environment(self, cfg, cache_dir: Path, cache: Path) -> dict[str, str]:
        return compilation_cache_environment(cache)


SUPPORT = JaxSupport(
    trainer="trainables.jax_backend.trainer:JaxTrainer",
    compile=("jit", "eager"),  # eager: jax without jax.jit, op by op
    attn_backend=("sdpa", "manual"),  # sdpa: jax.nn.dot_product_attention
    precision=("fp32", "bf16"),
    optimizer=("adamw",),
    # XLA's dot emitter, chosen by XLA_FLAGS (trainables/jax_backend/environment.py). eigen first: jaxlib 0.10.2's
    # default YNNPACK fusions can give wrong numbers under jit (jax-ml/jax#39103)
    blas=tuple(XLA_BACKEND_FLAGS),
    # autotune keeps what a trial computes: it leaves ynnpack out while that bug stands
    blas_changes_numerics={"ynnpack": "jaxlib 0.10.2's YNNPACK fusions can give wrong numbers under jit (jax#39103)"},
    fusing_compiles=("jit",),
    compile_cache=JAX_CACHE,
    runtime_bytes=340 * MIB,  # measured as trainables/memory.py says
    sdpa_kernel="sdpa-xla",  # XLA's dense implementation: masked after the matmul, autograd backward
)
