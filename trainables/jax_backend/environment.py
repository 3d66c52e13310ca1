"""The environment a jax worker starts with: XLA_FLAGS for the matmul backend (`blas`) and fusion=off, and the
variables of its compilation cache.

XLA reads XLA_FLAGS once, when jax starts, so the launcher sets them in the worker's environment before it imports
anything (trainables/launcher.py, through jax's declaration in trainables/jax_backend/support.py); the row records
them (env, xla_flags). Measured with jaxlib 0.10.2: the optimized HLO (--xla_dump_to) shows `__ynn_fusion` (YNNPACK,
XLA's default), a plain `dot` (Eigen) or `__onednn_fusion`. `cfg` is a TrialConfig (unannotated:
trainables/support.py).
"""

from __future__ import annotations

from pathlib import Path

# in the order jax's declaration lists them: the first is jax's auto
XLA_BACKEND_FLAGS = {
    # empty ynn fusion types: no YNNPACK fusions, dots go to XLA's Eigen runtime. jaxlib 0.10.2's default YNNPACK
    # fusions can give wrong numbers under jit (jax-ml/jax#39103), so this is jax's auto
    "eigen": "--xla_cpu_experimental_ynn_fusion_type=",
    "ynnpack": "",  # XLA's default
    "onednn": (
        "--xla_cpu_experimental_ynn_fusion_type=-individual_dot --xla_cpu_use_onednn=true "
        "--xla_cpu_experimental_onednn_fusion_type=dot"
    ),
}
JAX_DEFAULT_BLAS = next(iter(XLA_BACKEND_FLAGS))
# fusion=off under XLA: its fusion passes by name (XLA_FLAGS --xla_disable_hlo_passes)
XLA_FUSION_OFF_PASSES = ("fusion",)
JAX_CACHE = "jax"  # jax_compilation_cache_dir: serialised XLA executables
JAX_CACHE_ENV = {
    # jax reads its flags from these variables when it loads (jax/_src/config.py). Without the two thresholds a
    # program that compiles in under 1 s is never cached: measured here, a small train step compiled in 0.86 s
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
}


def xla_flags(blas: str | None) -> str:
    """XLA_FLAGS for a jax trial's backend (None: jax's auto)."""
    return XLA_BACKEND_FLAGS[blas or JAX_DEFAULT_BLAS]


def framework_environment(cfg) -> dict[str, str]:
    """Variables the worker of a jax trial needs before jax starts."""
    flags = [xla_flags(cfg.blas)]
    if cfg.fusion == "off":  # XLA's fusion passes by name
        flags.append(f"--xla_disable_hlo_passes={','.join(XLA_FUSION_OFF_PASSES)}")
    # cpu only: without it jax looks for accelerator plugins at start
    return {"XLA_FLAGS": " ".join(filter(None, flags)), "JAX_PLATFORMS": "cpu"}


def compilation_cache_environment(cache: Path) -> dict[str, str]:
    """Variables that put jax's persistent compilation cache in `cache`."""
    return {"JAX_COMPILATION_CACHE_DIR": str(cache)} | JAX_CACHE_ENV
