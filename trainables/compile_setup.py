"""The compiler keys of a trial (issue 15): the environment its worker starts with, what this node cannot compile, and
the readers of what the compiler did.

The launcher calls compile_environment() for every compiled trial with the cache folder the trial runs on (a fresh,
empty one for jit_cache=cold; for warm, the folder an earlier worker of the same config compiled into), and
compile_unsupported_reason() at plan validation. Neither runs a compiler, nor imports a framework: they run on every
launch. What each framework applies inside the worker (Inductor options, the jax cache listener) and reads back
after the timed region is in trainables/torch_trainable.py and trainables/jax_trainable.py; the reader of XLA's
optimized HLO (fused and generated kernels) is here, as it needs no jax.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import tempfile
from pathlib import Path

from hwctl.isa import ISA_CAPS, cpu_flags
from trainables.config import INDUCTOR_COMPILES, TrialConfig
from trainables.cxx_shim import LOG_DIR_VARIABLE, REAL_CXX_VARIABLE, write_shim

INDUCTOR_CACHE = "inductor"  # TORCHINDUCTOR_CACHE_DIR: FX graph cache, AOTAutograd cache, compiled kernels
JAX_CACHE = "jax"  # jax_compilation_cache_dir: serialised XLA executables
JAX_CACHE_ENV = {
    # jax reads its flags from these variables when it loads (jax/_src/config.py). Without the two thresholds a
    # program that compiles in under 1 s is never cached: measured here, a small train step compiled in 0.86 s
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
}
# fusion=off under Inductor (Inductor config, applied as torch.compile options; trainables/torch_trainable.py). Fusion
# happens in two places, and max_fusion_size=1 alone stops only the second: a pointwise op is inlined into the loop of
# its consumer while the graph is lowered, never becoming a buffer of its own, so `cpp_fused_gelu_native_layer_norm`
# survived it. Measured on a depth-1 width-32 model's training step (fused: kernels computing more than one op):
# default 32 kernels, 27 fused; max_fusion_size=1: 54, 39 fused; with realize_each_op: 147, 0 fused; all of the
# settings below: 145, 0 fused (torch 2.13).
# - realize_each_op: a post-grad pass (torch_trainable.RealizeEachOp) marks every op of the graph but views with
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
# fusion=off under XLA: its fusion passes by name (XLA_FLAGS --xla_disable_hlo_passes, see trainables/backends.py)
XLA_FUSION_OFF_PASSES = ("fusion",)
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


def inductor_compiler(cfg: TrialConfig) -> str:
    """The C++ compiler Inductor would run for `cfg` (its auto: $CXX, else g++), as named."""
    return cfg.cxx or os.environ.get("CXX") or "g++"


def compile_environment(cfg: TrialConfig, cache_dir: Path) -> dict[str, str]:
    """Variables the worker of a compiled trial starts with: its compile cache in `cache_dir` and, for Inductor, the
    logging compiler shim and -march. {} for eager. Writes the shim and a log folder into `cache_dir`; runs nothing."""
    if cfg.compile == "eager":
        return {}
    cache_dir = Path(cache_dir).absolute()
    cache = cache_dir / (JAX_CACHE if cfg.framework == "jax" else INDUCTOR_CACHE)
    if cfg.jit_cache == "cold" and cache.exists() and any(cache.iterdir()):
        raise ValueError(f"jit_cache=cold needs an empty compile cache, and {cache} holds a primed one")
    cache.mkdir(parents=True, exist_ok=True)
    if cfg.framework == "jax":
        return {"JAX_COMPILATION_CACHE_DIR": str(cache)} | JAX_CACHE_ENV
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


def compile_unsupported_reason(cfg: TrialConfig, flags: set[str] | None = None) -> str | None:
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


# ---- reading back what the compiler made ----------------------------------------------------------------------------
XLA_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+ = [^=]*?\s([\w\-]+)\(")
XLA_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
XLA_CALLS = re.compile(r"calls=%?([\w.\-]+)")
XLA_APPLIES = re.compile(r"(?:to_apply|comparator)=%?([\w.\-]+)")  # a reduction's or sort's scalar function
# instructions that run no code of their own: they name, reshape the view of or group buffers
XLA_NO_CODE = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast", "after-all", "partition-id"}


def xla_kernel_counts(hlo_text: str) -> dict[str, int]:
    """{fused_kernels, generated_kernels} of optimized HLO text. generated: the instructions that run code of their own
    (a fusion counts once; parameters, tuples, bitcasts none) in the computations that run as such (not a fusion's
    body, nor a reduction's scalar function); fused: the fusions whose body computes more than one instruction
    (XLA:CPU wraps single ops into fusions too, its fusion-wrapper pass)."""
    computations: dict[str, list[str]] = {}
    fusion_bodies, inlined = set(), set()
    current = None
    for line in hlo_text.splitlines():
        header = XLA_COMPUTATION.match(line)
        if header and " = " not in line.split("{")[0]:
            current = computations.setdefault(header.group(1), [])
            continue
        instruction = XLA_INSTRUCTION.match(line)
        if instruction is None or current is None:
            continue
        current.append(instruction.group(1))
        inlined.update(XLA_APPLIES.findall(line))
        if instruction.group(1) == "fusion":
            fusion_bodies.update(XLA_CALLS.findall(line))
    ops = {name: sum(op not in XLA_NO_CODE for op in opcodes) for name, opcodes in computations.items()}
    return {
        "fused_kernels": sum(ops.get(body, 0) > 1 for body in fusion_bodies),
        "generated_kernels": sum(count for name, count in ops.items() if name not in fusion_bodies | inlined),
    }
