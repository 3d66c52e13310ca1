"""Which library runs a matmul in this process (MKL, oneDNN, or ATen's own kernel): one call watched through MKL's
and oneDNN's verbose output, which they print to the C stdout while it is borrowed; and which arithmetic oneDNN's
primitives ran (onednn_math: strict fp32, or a bf16/tf32 fpmath mode)."""

from __future__ import annotations

import ctypes
import os
import sys
import tempfile


def verbose_lines(run) -> tuple[list[str], bool]:
    """(what MKL and oneDNN print while run() executes, their verbose mode switched on in this process; whether both
    could be switched on).

    Both print to the C stdout (file descriptor 1), which is borrowed meanwhile; the caller's output is flushed
    first and lands where it did before.
    """
    import torch

    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    libc.fflush(None)
    saved = os.dup(1)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 1)
        # the _C setters, not torch.backends.*.verbose: those assert where a library cannot be made verbose
        mkl = torch.backends.mkl.is_available() and torch._C._verbose.mkl_set_verbose(1)
        onednn = torch.backends.mkldnn.is_available() and torch._C._verbose.mkldnn_set_verbose(1)
        try:
            run()
        finally:
            if mkl:
                torch._C._verbose.mkl_set_verbose(0)
            if onednn:
                torch._C._verbose.mkldnn_set_verbose(0)
            libc.fflush(None)
            os.dup2(saved, 1)
            os.close(saved)
        capture.seek(0)
        return capture.read().decode(errors="replace").splitlines(), bool(mkl and onednn)


def libraries_in(lines: list[str]) -> list[str]:
    """'mkl (SGEMM)', 'onednn (brg_matmul:avx512_core_bf16)': the GEMM calls of MKL_VERBOSE / ONEDNN_VERBOSE lines."""
    found = []
    for line in lines:
        if line.startswith("MKL_VERBOSE ") and "GEMM" in line.split("(")[0]:
            found.append(f"mkl ({line.split()[1].split('(')[0]})")
        parts = line.split(",")
        if parts[0] == "onednn_verbose" and "exec" in parts:  # ...,exec,cpu,matmul,brg_matmul:avx512_core_bf16,...
            at = parts.index("exec")
            found.append(f"onednn ({parts[at + 3]})" if len(parts) > at + 3 else "onednn")
    return list(dict.fromkeys(found))


def probe_matmul_library(dtype_name: str, m: int, k: int, n: int) -> str:
    """The library that runs torch's Linear, (m x k) @ (k x n) in dtype_name, in this process: one call watched
    through MKL's and oneDNN's verbose output. Where both were watched and neither reported it, and torch's BLAS is
    MKL, it was ATen's own kernel ("aten"); "unknown" where that cannot be told."""
    import torch

    dtype = getattr(torch, dtype_name)
    inputs, weight = torch.randn(m, k).to(dtype), torch.randn(n, k).to(dtype)
    lines, watched = verbose_lines(lambda: torch.nn.functional.linear(inputs, weight))
    found = libraries_in(lines)
    if found:
        return " + ".join(found)
    # torch built with MKL uses it as its BLAS: silent both, the matmul ran in ATen's own kernel (measured here for
    # bf16 under isa=avx2); without MKL it may have been another BLAS, which says nothing
    return "aten" if watched else "unknown"


def onednn_math(lines: list[str]) -> str:
    """The arithmetic the oneDNN primitives in MKL_VERBOSE / ONEDNN_VERBOSE `lines` ran, and how many GEMMs MKL ran
    beside them: 'strict: onednn 38 (inner_product:brg_matmul:avx512_core x38); mkl 0'. It begins 'strict' only where no
    primitive carried a non-strict fpmath mode (attr-fpmath:bf16, tf32, f16, any) and every tensor was f32;
    otherwise with what was not ('fpmath:bf16', 'dtype:bf16'); 'none' where oneDNN ran nothing."""
    kernels: dict[str, int] = {}
    other: set[str] = set()
    mkl = 0
    for line in lines:
        if line.startswith("MKL_VERBOSE ") and "GEMM" in line.split("(")[0]:
            mkl += 1
        parts = line.split(",")
        if parts[0] != "onednn_verbose" or "exec" not in parts or len(parts) < parts.index("exec") + 7:
            continue
        at = parts.index("exec")  # ...,exec,cpu,inner_product,brg_matmul:avx512_core,prop,tensors,attributes,...
        kernel = f"{parts[at + 2]}:{parts[at + 3]}"
        kernels[kernel] = kernels.get(kernel, 0) + 1
        dtypes = {tensor.split(":")[1] for tensor in parts[at + 5].split() if tensor.count(":") >= 1}
        other |= {f"dtype:{d}" for d in dtypes - {"f32", "undef"}}
        modes = {a.split(":")[1] for a in parts[at + 6].split() if a.startswith("attr-fpmath:")}
        other |= {f"fpmath:{m}" for m in modes - {"strict"}}
    if not kernels:
        return f"none: onednn 0; mkl {mkl}"
    mode = " ".join(sorted(other)) if other else "strict"
    ran = ", ".join(f"{kernel} x{count}" for kernel, count in kernels.items())
    return f"{mode}: onednn {sum(kernels.values())} ({ran}); mkl {mkl}"
