"""The matmul peaks of one package's libraries, measured in a fresh process (`python -m hwctl.matmul_libraries
LIBRARY[,LIBRARY] DTYPE THREADS CPUS`, one JSON line per library on stdout): machine_peak.py runs one per installed
package to find the machine's best.

A fresh process per package: no package's thread pool or settings (threadpoolctl limits, XLA's pool) leaks into
another's figure or into the trial's worker, and the worker imports no framework. torch.mm and oneDNN share torch's
process (one torch import, ~1.5 s here): setting oneDNN's fp32_precision to "ieee" leaves MKL's sgemm as it was.
Every library runs the protocol of torch's peak (kernels.py): square n in MATMUL_SIZES, 2n^3 FLOPs, the best call.
An fp32 figure must be IEEE fp32: a product further than FP32_TOLERANCE from the float64 one ran reduced-precision
math and is refused, as is a bf16 one further than BF16_TOLERANCE from fp32's.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys

from hwctl.kernels import best_matmul_gflops
from hwctl.microbench import measure_undisturbed, process_cpus

# relative Frobenius error of the product: IEEE fp32 GEMM at n=512 is ~1e-6 here, bf16-internal math ~3e-3
FP32_TOLERANCE = 1e-4
BF16_TOLERANCE = 0.02
# library -> (package it needs, what it runs)
LIBRARIES = {
    "torch.mm": ("torch", "torch.mm (torch's default: MKL sgemm for fp32, oneDNN for bf16)"),
    "onednn": ("torch", "torch.ops.mkldnn._linear_pointwise (one oneDNN inner product), fp32_precision='ieee'"),
    "numpy": ("numpy", "np.matmul (NumPy's BLAS, OpenBLAS in the wheel) under threadpoolctl's limit"),
    "jax": ("jax", "jnp.dot under jax.jit (XLA's default CPU backend), block_until_ready"),
}


def _inputs(n: int):
    import numpy as np

    rng = np.random.default_rng(n)
    return rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)


def _checker(library: str, dtype_name: str):
    """check(n, product): the product of _inputs(n) against float64's, as a NumPy array."""
    import numpy as np

    def check(n, product) -> None:
        a, b = _inputs(n)
        reference = a.astype(np.float64) @ b.astype(np.float64)
        error = float(np.linalg.norm(np.asarray(product, dtype=np.float64) - reference) / np.linalg.norm(reference))
        limit = FP32_TOLERANCE if dtype_name == "float32" else BF16_TOLERANCE
        if error > limit:
            raise RuntimeError(f"{library} {dtype_name} differs from float64 by {error:.1e} (relative), over {limit}")

    return check


def _torch_prepare(library: str, dtype_name: str, threads: int):
    import torch

    torch.set_num_threads(threads)
    dtype = getattr(torch, dtype_name)
    if library == "onednn":
        if not torch.backends.mkldnn.is_available():
            raise LookupError("torch was built without oneDNN (torch.backends.mkldnn.is_available() is False)")
        if hasattr(torch.backends.mkldnn, "matmul"):
            torch.backends.mkldnn.matmul.fp32_precision = "ieee"  # no bf16/tf32 math inside oneDNN's fp32

    def prepare(n):
        a, b = (torch.from_numpy(x).to(dtype) for x in _inputs(n))
        if library == "onednn":
            weight = b.t().contiguous()  # (out, in): x @ weight.T = a @ b
            return lambda: torch.ops.mkldnn._linear_pointwise(a, weight, None, "none", [], "")
        return lambda: torch.mm(a, b)

    return prepare, lambda product: product.float().numpy()


def _numpy_prepare(dtype_name: str, threads: int):
    import numpy as np
    import threadpoolctl

    if dtype_name != "float32":
        raise LookupError("NumPy has no bf16 matmul")
    threadpoolctl.threadpool_limits(threads, user_api="blas")  # kept for the life of this process

    def prepare(n):
        a, b = _inputs(n)
        out = np.empty_like(a)
        return lambda: np.matmul(a, b, out=out)

    return prepare, lambda product: product


def _jax_prepare(dtype_name: str, threads: int):
    cpus = len(os.sched_getaffinity(0))
    if cpus != threads:
        raise LookupError(f"XLA's CPU pool runs one thread per CPU of the affinity ({cpus}), not threads={threads}")
    import jax
    import jax.numpy as jnp

    dot = jax.jit(jnp.dot)

    def prepare(n):
        a, b = (jnp.asarray(x).astype(dtype_name) for x in _inputs(n))
        return lambda: dot(a, b).block_until_ready()

    return prepare, lambda product: jnp.asarray(product, jnp.float32)


def measure_library(library: str, dtype_name: str, threads: int) -> dict:
    """{"library", "gflops", "method", "undisturbed"}, or {"library", "gflops": None, "skipped": why} where the
    library is not installed or cannot run this dtype or thread count here."""
    package, method = LIBRARIES[library]
    if importlib.util.find_spec(package) is None:
        return {"library": library, "gflops": None, "skipped": f"{package} is not installed"}
    try:
        if package == "torch":
            prepare, as_array = _torch_prepare(library, dtype_name, threads)
        elif package == "numpy":
            prepare, as_array = _numpy_prepare(dtype_name, threads)
        else:
            prepare, as_array = _jax_prepare(dtype_name, threads)
    except LookupError as exc:
        return {"library": library, "gflops": None, "skipped": str(exc)}
    check = _checker(library, dtype_name)
    measure = lambda: best_matmul_gflops(prepare, lambda n, product: check(n, as_array(product)))  # noqa: E731
    try:
        gflops, tries, undisturbed = measure_undisturbed(measure, process_cpus(), threads)
    except (RuntimeError, NotImplementedError, AttributeError) as exc:  # a wrong product, or an op this build lacks
        return {"library": library, "gflops": None, "skipped": f"{type(exc).__name__}: {exc}"[:300]}
    return {"library": library, "gflops": gflops, "method": method + tries, "undisturbed": undisturbed}


if __name__ == "__main__":
    libraries_arg, dtype_arg, threads_arg, cpus_arg = sys.argv[1:5]
    # the caller's main thread may be bound to one OpenMP place: run on all of the trial's CPUs
    os.sched_setaffinity(0, [int(c) for c in cpus_arg.split(",")])
    for library_name in libraries_arg.split(","):
        print(json.dumps(measure_library(library_name, dtype_arg, int(threads_arg))), flush=True)
