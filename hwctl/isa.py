"""ISA caps: run a trial as if the CPU had fewer vector extensions, to show what AVX2 vs AVX-512 means.

A cap sets the limits the libraries read when they load: ATen's kernel dispatch
(ATEN_CPU_CAPABILITY), oneDNN's (ONEDNN_MAX_CPU_ISA) and MKL's (MKL_ENABLE_INSTRUCTIONS, which
drives fp32 GEMM). A cap can only lower what the CPU has; asking for more is unsupported.
"""

from __future__ import annotations

from pathlib import Path

from hwctl.proc_sysfs import cpuinfo_fields, cpuinfo_file

# cap -> (CPU flags it needs, environment that imposes it)
ISA_CAPS = {
    "sse42": (
        {"sse4_2"},
        {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
    ),
    "avx2": (
        {"avx2", "fma"},
        {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    ),
    "avx512": (
        {"avx512f", "avx512bw", "avx512vl", "avx512dq"},
        {"ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "MKL_ENABLE_INSTRUCTIONS": "AVX512"},
    ),
    "avx512_bf16": (
        {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16"},
        {
            "ATEN_CPU_CAPABILITY": "avx512",
            "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16",
            "MKL_ENABLE_INSTRUCTIONS": "AVX512",
        },
    ),
    "amx": (
        {"avx512f", "amx_tile", "amx_bf16"},
        {
            "ATEN_CPU_CAPABILITY": "avx512",
            "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX",
            "MKL_ENABLE_INSTRUCTIONS": "AVX512_E4",
        },
    ),
}


def cpu_flags(cpuinfo_path: Path | None = None) -> set[str]:
    """The flags of /proc/cpuinfo (or of the file BENCH_CPUINFO names: a testing hook, see proc_sysfs.py)."""
    try:
        return set(cpuinfo_fields((cpuinfo_path or cpuinfo_file()).read_text()).get("flags", "").split())
    except OSError:
        return set()


def isa_unsupported_reason(isa: str, flags: set[str] | None = None) -> str | None:
    needed, _ = ISA_CAPS[isa]
    missing = needed - (cpu_flags() if flags is None else flags)
    if missing:
        return f"isa={isa}: this CPU lacks {', '.join(sorted(missing))}"
    return None


def isa_environment(isa: str | None) -> dict[str, str]:
    return dict(ISA_CAPS[isa][1]) if isa else {}


# CPU flags with which oneDNN runs bf16 matmuls in hardware rather than converting to fp32 kernels: AVX512-BF16
# (bf16 dot products), AMX-BF16 (tile matmuls), AVX-NE-CONVERT (bf16 loads and converts of its AVX2-VNNI-2 kernels)
BF16_NATIVE_FLAGS = ("avx512_bf16", "amx_bf16", "avx_ne_convert")


def bf16_native_reason(isa: str | None = None, flags: set[str] | None = None) -> str | None:
    """None where bf16 matmuls run natively on this CPU under the ISA cap `isa`; otherwise why not."""
    flags = cpu_flags() if flags is None else flags
    if not flags & set(BF16_NATIVE_FLAGS):
        return f"the CPU has none of {', '.join(BF16_NATIVE_FLAGS)} (cpuinfo flags)"
    # measured: capped at AVX512_CORE, oneDNN runs bf16 matmuls as gemm:jit:bf16 (fp32 FMAs); at AVX2 ATen runs them
    if isa and not ISA_CAPS[isa][0] & set(BF16_NATIVE_FLAGS):
        return f"isa={isa} caps oneDNN at {ISA_CAPS[isa][1]['ONEDNN_MAX_CPU_ISA']}, below its bf16 instructions"
    return None
