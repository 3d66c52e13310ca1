"""The matmul backend (`blas`) of a trial, as environment the worker starts with, and what each one means.

XLA reads XLA_FLAGS once, when jax starts, so the launcher sets them in the worker's environment before it imports
anything (trainables/launcher.py); the row records them (env, xla_flags). Measured with jaxlib 0.10.2: the optimized
HLO (--xla_dump_to) shows `__ynn_fusion` (YNNPACK, XLA's default), a plain `dot` (Eigen) or `__onednn_fusion`.
torch's backend is a setting inside the process (trainables/torch_trainable.py); NumPy has the BLAS its wheel ships.
"""

from __future__ import annotations

from trainables.compile_setup import XLA_FUSION_OFF_PASSES

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
JAX_DEFAULT_BLAS = "eigen"


def xla_flags(blas: str | None) -> str:
    """XLA_FLAGS for a jax trial's backend (None: jax's auto)."""
    return XLA_BACKEND_FLAGS[blas or JAX_DEFAULT_BLAS]


def framework_environment(cfg) -> dict[str, str]:
    """Variables the worker of `cfg` needs before its framework starts; a user's own XLA_FLAGS come first."""
    if cfg.framework != "jax":
        return {}
    flags = [xla_flags(cfg.blas)]
    if cfg.fusion == "off":  # XLA's fusion passes by name (trainables/compile_setup.py)
        flags.append(f"--xla_disable_hlo_passes={','.join(XLA_FUSION_OFF_PASSES)}")
    # cpu only: without it jax looks for accelerator plugins at start
    return {"XLA_FLAGS": " ".join(filter(None, flags)), "JAX_PLATFORMS": "cpu"}
