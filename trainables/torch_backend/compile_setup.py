"""Inductor's compiler keys (compile, fusion, cxx, cxx_opt, march, simdlen; README "Compilers and the system under the
trial"): the environment a compiled torch worker starts with, and what this node cannot compile.

torch's declaration (trainables/torch_backend/support.py) calls inductor_environment() for every compiled trial with
the cache folder the trial runs on (a fresh, empty one for jit_cache=cold; for warm, the folder an earlier worker of
the same config compiled into), and compile_unsupported_reason() at plan validation. Neither runs a compiler, nor
imports torch: they run on every launch. What the worker applies (Inductor options) and reads back after the timed
region is in trainables/torch_backend/trainer.py. `cfg` is a TrialConfig (unannotated: trainables/support.py).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import tempfile
from pathlib import Path

from hwctl.isa import ISA_CAPS, cpu_flags
from trainables.torch_backend.cxx_shim import LOG_DIR_VARIABLE, REAL_CXX_VARIABLE, write_shim

# compile values whose code Inductor generates: the only ones the C++ compiler keys change
INDUCTOR_COMPILES = ("inductor", "inductor-max-autotune")
INDUCTOR_CACHE = "inductor"  # TORCHINDUCTOR_CACHE_DIR: FX graph cache, AOTAutograd cache, compiled kernels
# fusion=off under Inductor (Inductor config, applied as torch.compile options; trainables/torch_backend/trainer.py).
# Fusion happens in two places, and max_fusion_size=1 alone stops only the second: a pointwise op is inlined into the
# loop of its consumer while the graph is lowered, never becoming a buffer of its own, so
# `cpp_fused_gelu_native_layer_norm` survived it. Measured on a depth-1 width-32 model's training step (fused: kernels
# computing more than one op): default 32 kernels, 27 fused; max_fusion_size=1: 54, 39 fused; with realize_each_op:
# 147, 0 fused; all of the settings below: 145, 0 fused (torch 2.13).
# - realize_each_op: a post-grad pass (torch_backend.trainer.RealizeEachOp) marks every op of the graph but views with
#   Inductor's `inductor_realize_to_strides`, so GraphLowering.run_node makes its result a buffer (the mark Inductor's
#   own decompose_mem_bound_mm pass sets on single nodes): no op is inlined into another's loop.
# - max_fusion_size=1: the scheduler puts no two buffers in one kernel (vertical, horizontal and C++ outer-loop
#   fusion all pass Inductor's choices.can_fuse first); epilogue and prologue fusion into GEMM templates off too.
# - pattern_matcher off: no rewrites of op groups into fused library calls or fused patterns.
# Inductor's C++ backend still emits the loops of consecutive kernels into one compiled function (a kernel group,
# named cpp_fused_<all their ops>): that is how it batches calls, not fusion, since each kernel keeps its own loop.
INDUCTOR_FUSION_OFF = {
    "realize_each_op": True,
    "max_fusion_size": 1,
    "epilogue_fusion": False,
    "prologue_fusion": False,
    "pattern_matcher": False,
}
# flags of the x86-64 micro-architecture levels (the psABI's), as /proc/cpuinfo names them: code built with
# -march=x86-64-vN dies with SIGILL on a CPU without them
MARCH_FLAGS = {
    "x86-64": set(),
    "x86-64-v2": {"cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3"},
    "x86-64-v3": {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"},
    "x86-64-v4": {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"},
}
LEVELS = ("x86-64", "x86-64-v2", "x86-64-v3", "x86-64-v4")
# Inductor adds its vector ISA's flags (-mavx512f ...) whatever -march says: a generic target's code stays generic only
# with the vector width capped to what the level has (simdlen's auto under march; vec_isa records it)
MARCH_SIMDLEN = {"x86-64": 0, "x86-64-v2": 0, "x86-64-v3": 256}
# Inductor's vector ISAs by width (torch/_inductor/cpu_vec_isa.py); a simdlen no ISA of the CPU has silently gives
# scalar code, so it is refused instead
SIMDLEN_FLAGS = {256: ISA_CAPS["avx2"][0], 512: ISA_CAPS["avx512"][0]}


def inductor_compiler(cfg) -> str:
    """The C++ compiler Inductor would run for `cfg` (its auto: $CXX, else g++), as named."""
    return cfg.cxx or os.environ.get("CXX") or "g++"


def inductor_environment(cfg, cache_dir: Path, cache: Path) -> dict[str, str]:
    """Variables the worker of a compiled torch trial starts with: Inductor's cache in `cache` (made, and checked
    empty for a cold trial) and, for the compiles that generate C++ code, the logging compiler shim and -march. Writes
    the shim and a log folder into `cache_dir`; runs nothing."""
    env = {"TORCHINDUCTOR_CACHE_DIR": str(cache)}
    if cfg.compile not in INDUCTOR_COMPILES:  # aot_eager: no C++ code, and no cache kept for it (the folder anyway)
        return env
    real = shutil.which(inductor_compiler(cfg))
    if real is None:  # compile_unsupported_reason refused it at validation
        raise RuntimeError(f"{inductor_compiler(cfg)} is not on PATH")
    shim = write_shim(real, cache_dir / "cxx", cfg.cxx_opt)
    if _compiler_family(str(shim)) != _compiler_family(Path(real).name):
        raise ValueError(
            f"cache_dir {cache_dir}: Inductor tells gcc from clang by the compiler's path, and {shim} would read as "
            f"{_compiler_family(str(shim))}: use a folder whose path names neither"
        )
    env |= {
        # Inductor keeps its precompiled headers under tempfile.gettempdir() whatever its cache folder (codecache.py
        # _HEADER_DIR: "these headers need to be global"): a cold trial must build its own, a warm one reuse them
        "TMPDIR": str(_folder(cache_dir / "tmp")),
        "CXX": str(shim),
        REAL_CXX_VARIABLE: real,
        # a folder of its own per launch: a warm trial must not count the compiles of the run that primed the cache
        LOG_DIR_VARIABLE: tempfile.mkdtemp(prefix="cxx-log-", dir=cache_dir),
    }
    if cfg.march is not None:
        env["TORCHINDUCTOR_CPP_MARCH"] = cfg.march
    return env


def _folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _compiler_family(path: str) -> str | None:
    """gcc, clang or None, as Inductor reads a compiler path (cpp_builder.py `_is_clang` first, then `_is_gcc`)."""
    if re.search(r"clang", path):
        return "clang"
    return "gcc" if re.search(r"(gcc|g\+\+|gnu-c\+\+)", path) else None


def compile_unsupported_reason(cfg, flags: set[str] | None = None) -> str | None:
    """Why this node cannot run the compiler keys of `cfg` as asked, or None. `flags`: the CPU's (default: read from
    /proc/cpuinfo, or the simulated CPU BENCH_CPUINFO names)."""
    if cfg.compile not in INDUCTOR_COMPILES:
        return None
    compiler = inductor_compiler(cfg)
    if shutil.which(compiler) is None:
        asked = f"cxx={cfg.cxx!r}" if cfg.cxx else f"compile={cfg.compile!r} needs a C++ compiler, and {compiler!r}"
        return f"{asked} is not installed on this node"
    flags = cpu_flags() if flags is None else flags
    if cfg.simdlen:
        missing = SIMDLEN_FLAGS[cfg.simdlen] - flags
        if missing:
            return f"simdlen={cfg.simdlen} needs vector instructions this CPU lacks ({', '.join(sorted(missing))})"
    if cfg.march not in (None, "native"):
        if platform.machine() not in ("x86_64", "AMD64"):
            return f"march={cfg.march!r} is an x86-64 target; this node is {platform.machine()}"
        needed = set().union(*(MARCH_FLAGS[level] for level in LEVELS[: LEVELS.index(cfg.march) + 1]))
        missing = needed - flags
        if missing:
            return f"march={cfg.march!r} code would not run here: this CPU lacks {', '.join(sorted(missing))}"
    return None
