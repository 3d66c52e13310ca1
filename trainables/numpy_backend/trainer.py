"""The NumPy trainer: trainables/numpy_backend/model.py's hand-written forward and backward, and a hand-written AdamW.

One fused step per call (FUSED_STEP): nothing is asynchronous, but the forward, backward and update are one method
here, as in JAX, so the timing protocol times the step whole. Matmuls run in the OpenBLAS NumPy's wheel ships; its
thread pool is sized with threadpoolctl and read back. This module never imports torch.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import threadpoolctl

from hwctl.microbench import MATMUL_REPEATS, MATMUL_SECONDS_PER_SIZE, MATMUL_SIZES, cached_peak
from trainables.config import TrialConfig
from trainables.numpy_backend.model import GPT, FlatParameters, Gradients
from trainables.trainer import Trainer
from trainables.weights import ADAMW, initial_weights, parameter_shapes, sample_batches

F32 = np.float32
PEAK_FIGURE = "numpy.matmul"
PEAK_METHOD = (
    f"best GFLOP/s of np.matmul float32 square n in {MATMUL_SIZES} (2n^3 FLOPs), after one warm-up call, "
    f"up to {MATMUL_REPEATS} calls or {MATMUL_SECONDS_PER_SIZE} s per n, in the measuring process"
)


class AdamW:
    """torch.optim.AdamW (decoupled weight decay on every parameter) on the one flat float32 buffer that holds all
    weights, in place. It walks the buffer in chunks that stay in the L2 cache through all twelve operations instead of
    streaming every array through memory twelve times: 15 -> 10 ms per step for the quick baseline's 5.3 M parameters
    (measured here)."""

    CHUNK = 1 << 16  # 64 Ki float32 per array: the fastest of 8-128 Ki measured here

    def __init__(self, params: np.ndarray, lr: float, betas: tuple[float, float], eps: float, weight_decay: float):
        self.params, self.lr, self.betas, self.eps, self.weight_decay = params, lr, betas, eps, weight_decay
        self.first_moment = np.zeros_like(params)
        self.second_moment = np.zeros_like(params)
        self.scratch = np.empty(min(self.CHUNK, params.size), F32)
        self.updates = 0

    def step(self, grads: np.ndarray) -> None:
        self.updates += 1
        (beta1, beta2), lr = self.betas, self.lr
        decay, beta1, beta2 = F32(1 - lr * self.weight_decay), F32(beta1), F32(beta2)
        # p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps), ordered as torch's AdamW computes it
        step_size = F32(lr / (1 - self.betas[0] ** self.updates))
        second_correction = F32(math.sqrt(1 - self.betas[1] ** self.updates))
        for start in range(0, self.params.size, self.CHUNK):
            chunk = slice(start, start + self.CHUNK)
            p, m, v, g = self.params[chunk], self.first_moment[chunk], self.second_moment[chunk], grads[chunk]
            scratch = self.scratch[: p.size]
            p *= decay
            m *= beta1  # m = b1 m + (1 - b1) g
            np.multiply(g, 1 - beta1, out=scratch)
            m += scratch
            v *= beta2  # v = b2 v + (1 - b2) g^2
            np.multiply(g, g, out=scratch)
            scratch *= 1 - beta2
            v += scratch
            np.sqrt(v, out=scratch)
            scratch /= second_correction
            scratch += F32(self.eps)
            np.divide(m, scratch, out=scratch)
            scratch *= step_size
            p -= scratch


class NumpyTrainer(Trainer):
    NAME = "numpy"
    FUSED_STEP = True

    @classmethod
    def configure_threads(cls, threads: int, interop_threads: int) -> None:
        """Sizes every loaded BLAS pool (NumPy's OpenBLAS, and scipy's, which scipy.special loads but the step does
        not use); interop_threads has no meaning here (config validation keeps it at 1)."""
        threadpoolctl.threadpool_limits(threads, user_api="blas")
        check_blas_threads(threads)

    def __init__(self, cfg: TrialConfig):
        self.cfg = cfg
        shapes = parameter_shapes(cfg)
        self.weights = FlatParameters(shapes)
        for name, array in initial_weights(cfg).items():
            self.weights[name][...] = array
        self.grads = Gradients(shapes)
        self.model = GPT(cfg, self.weights)
        self.rng = np.random.default_rng(cfg.seed)  # dropout's masks; the weights come from trainables/weights.py
        self.optimizer = AdamW(self.weights.flat, cfg.learning_rate, **ADAMW)
        self.params = self.weights.flat.size  # wte once: the output projection is wte

    def make_batches(self, tokens: np.ndarray, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
        return sample_batches(tokens, self.cfg, count)

    def step(self, micro_batches: list[tuple[np.ndarray, np.ndarray]]) -> float:
        loss_sum = 0.0
        for index, (inputs, targets) in enumerate(micro_batches):
            self.grads.accumulate = index > 0  # the first micro-batch writes the gradients, later ones add
            loss_sum += self._loss_and_gradients(inputs, targets, self.grads)
        self.optimizer.step(self.grads.flat)
        return loss_sum

    def _loss_and_gradients(self, inputs: np.ndarray, targets: np.ndarray, grads: Gradients) -> float:
        """The micro-batch's loss / grad_accum (as torch's forward returns it); its gradient goes into `grads`."""
        loss, saved = self.model.forward(inputs, targets, self.rng)
        self.model.backward(saved, grads, 1 / self.cfg.grad_accum)
        return float(loss / F32(self.cfg.grad_accum))

    def loss_value(self, loss: float) -> float:
        return float(loss)

    def facts(self) -> dict:
        """Raises if a BLAS pool runs another thread count than the trial's: such a row would be wrong."""
        if self.cfg.threads is not None:
            check_blas_threads(self.cfg.threads)
        pools = threadpoolctl.threadpool_info()
        blas = numpy_blas_pool(pools)
        thread_pools: dict[str, int] = {}
        for pool in pools:  # by internal_api, the largest where a library is loaded twice (NumPy's and scipy's)
            thread_pools[pool["internal_api"]] = max(thread_pools.get(pool["internal_api"], 0), pool["num_threads"])
        return {
            "numpy_version": np.__version__,
            "blas_used": blas["internal_api"] if blas else "unknown",
            "blas_detail": _describe(blas) if blas else None,
            "thread_pools": thread_pools,
        }

    def matmul_peak(self, threads: int, cache_dir: Path) -> dict:
        """np.matmul's float32 peak under the trial's conditions, cached per host like torch's (hwctl/microbench.py);
        the numpy step's matmuls are all float32 sgemm, so this is the peak MFU divides by."""
        peak = cached_peak(
            figure=PEAK_FIGURE,
            dtype_name="float32",
            threads=threads,
            cache_dir=cache_dir,
            measure=lambda: measure_numpy_matmul_gflops(threads),
            method=PEAK_METHOD,
            torch_kernel=False,
        )
        blas = numpy_blas_pool(threadpoolctl.threadpool_info())
        return {
            "peak_gflops": peak["peak_gflops"],
            "peak_dtype": "fp32",
            "peak_gflops_fp32": peak["peak_gflops"],
            "peak_method": peak["peak_method"],
            "peak_cached": peak["peak_cached"],
            "matmul_library": f"{blas['internal_api'] if blas else 'unknown'} (sgemm)",
        }

    def current_weights(self) -> dict[str, np.ndarray]:
        return {name: view.copy() for name, view in self.weights.views.items()}

    def parameter_gradients(self, inputs, targets) -> tuple[float, dict[str, np.ndarray]]:
        grads = Gradients(parameter_shapes(self.cfg))  # not self.grads: no state of the trainer changes
        rng_state = self.rng.bit_generator.state
        loss = self._loss_and_gradients(np.asarray(inputs), np.asarray(targets), grads)
        self.rng.bit_generator.state = rng_state
        return loss, {name: view.copy() for name, view in grads.views.items()}

    def save(self, folder: Path) -> None:
        from safetensors.numpy import save_file

        save_file(self.current_weights(), str(Path(folder) / "model.safetensors"))


def measure_numpy_matmul_gflops(threads: int) -> float:
    """Best GFLOP/s of square float32 np.matmul on `threads` BLAS threads (the protocol of torch's peak)."""
    rng = np.random.default_rng(0)
    best = 0.0
    with threadpoolctl.threadpool_limits(threads, user_api="blas"):
        for n in MATMUL_SIZES:
            a, b = (rng.standard_normal((n, n), dtype=F32) for _ in range(2))
            product = a @ b  # first call: allocation and thread start-up
            spent = 0.0
            for _ in range(MATMUL_REPEATS):
                start = time.perf_counter()
                np.matmul(a, b, out=product)
                elapsed = time.perf_counter() - start
                best, spent = max(best, 2 * n**3 / elapsed / 1e9), spent + elapsed
                if spent > MATMUL_SECONDS_PER_SIZE:
                    break
    return best


def numpy_blas_pool(pools: list[dict]) -> dict | None:
    """The BLAS pool NumPy's own matmul uses: the one shipped in the numpy wheel (numpy.libs), not scipy's."""
    blas = [pool for pool in pools if pool["user_api"] == "blas"]
    return next((pool for pool in blas if "numpy" in Path(pool["filepath"]).parent.name), blas[0] if blas else None)


def check_blas_threads(threads: int) -> None:
    wrong = [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas" and p["num_threads"] != threads]
    if wrong:
        found = ", ".join(f"{Path(p['filepath']).name}: {p['num_threads']}" for p in wrong)
        raise RuntimeError(f"threads={threads} did not take: BLAS thread pools run other thread counts ({found})")


def _describe(pool: dict) -> str:
    """e.g. 'openblas 0.3.31.188.0 SkylakeX pthreads (libscipy_openblas64_-32a4b2a6.so)'."""
    parts = (pool["internal_api"], pool.get("version"), pool.get("architecture"), pool.get("threading_layer"))
    return " ".join(str(part) for part in parts if part) + f" ({Path(pool['filepath']).name})"
