"""The JAX trainer: forward, backward over every micro-batch and the optax AdamW update as one fused step.

compile=jit runs the whole step as one XLA executable, compiled ahead of time by the first step() (so the first step
carries the compile time, as the worker's compile_s expects) and kept, so facts() reads back the optimized HLO of the
very executable that ran. compile=eager runs the same functions without jax.jit: jax dispatches each primitive as its
own small XLA computation (jax's library functions that are jitted inside, such as jnp.einsum or
jax.nn.dot_product_attention, stay jitted as units). Each step blocks until its results exist: the timing protocol
reads the clock between calls.

The matmul backend is chosen by XLA_FLAGS before jax starts (jax_backend/environment.py), so nothing here selects it;
facts() reads back what ran. XLA's CPU thread pool (threads named tf_XLAEigen) sizes itself from the process's CPU
affinity when its client starts, and has no thread-count setting: a trial whose `threads` differ from that fails.
This module never imports torch: a framework=jax worker must not load it.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
import optax
from jax import lax

from hwctl.isa import bf16_native_reason
from hwctl.microbench import MATMUL_REPEATS, MATMUL_SECONDS_PER_SIZE, MATMUL_SIZES, cached_peak
from trainables.config import ConfigError, TrialConfig
from trainables.jax_backend.environment import XLA_FUSION_OFF_PASSES
from trainables.jax_backend.hlo_kernels import xla_kernel_counts
from trainables.jax_backend.model import gpt_loss
from trainables.trainer import Trainer
from trainables.weights import ADAMW, initial_weights, sample_batches

XLA_POOL_THREAD = "tf_XLAEigen"  # the name tsl gives the threads of XLA's CPU intra-op (Eigen) pool
# what each matmul backend looks like in optimized HLO (jaxlib 0.10.2): a custom fusion's kind, else a plain dot that
# XLA's CPU runtime runs in Eigen (small ones in XLA's own emitted loops, which the HLO does not tell apart)
FUSION_KINDS = {"__ynn_fusion": "ynnpack", "__onednn_fusion": "onednn"}
HLO_MARKERS = {"ynnpack": "__ynn_fusion", "onednn": "__onednn_fusion", "eigen": "dot"}
DOTS_FROM_STEP_HLO = "optimized HLO of the compiled train step"
DOTS_FROM_EAGER = "each dot_general of the step's jaxpr compiled alone, as eager dispatch compiles it"
DTYPES = {"fp32": jnp.float32, "bf16": jnp.bfloat16}
# jax's persistent compilation cache, as jax.monitoring events: every compile that may use the cache is a request,
# one that finds its executable there a hit (jax/_src/compiler.py compile_or_get_cached)
CACHE_REQUEST, CACHE_HIT = "/jax/compilation_cache/compile_requests_use_cache", "/jax/compilation_cache/cache_hits"
CACHE_EVENTS: Counter = Counter()


def _count_cache_event(event: str, **_) -> None:
    if event in (CACHE_REQUEST, CACHE_HIT):
        CACHE_EVENTS[event] += 1


jax.monitoring.register_event_listener(_count_cache_event)


def xla_pool_threads() -> int:
    """Threads of XLA's CPU pool in this process, counted by name (0 before jax's CPU client starts)."""
    count = 0
    for comm in Path("/proc/self/task").glob("*/comm"):
        try:
            count += comm.read_text().startswith(XLA_POOL_THREAD)
        except OSError:  # the thread ended meanwhile
            continue
    return count


def _pool_mismatch(threads: int) -> str | None:
    """Why XLA's pool does not run `threads` threads, or None where it does (or will, once it starts)."""
    running = xla_pool_threads()
    if running:
        size, source = running, f"runs {running} {XLA_POOL_THREAD} threads"
    else:
        size = len(os.sched_getaffinity(0))
        source = f"will start {size} {XLA_POOL_THREAD} threads (one per CPU of the process's affinity)"
    if size == threads:
        return None
    return (
        f"threads={threads} cannot be honoured by jax: XLA's CPU pool {source} and has no thread-count setting; "
        f"confine the worker to {threads} CPUs (cores={threads} with pinning)"
    )


class JaxTrainer(Trainer):
    NAME = "jax"
    FUSED_STEP = True

    @classmethod
    def configure_threads(cls, threads: int, interop_threads: int) -> None:
        """Nothing to set (XLA has no thread-count setting): fail now, before the trial, where the pool XLA starts or
        runs will not have `threads` threads. interop_threads is torch's (the config holds it at 1 for jax)."""
        reason = _pool_mismatch(threads)
        if reason:
            raise RuntimeError(reason)

    def __init__(self, cfg: TrialConfig):
        if cfg.attn_backend == "sdpa" and cfg.dropout > 0:
            raise ConfigError(
                f"dropout={cfg.dropout} with attn_backend='sdpa' cannot run with framework='jax': "
                "jax.nn.dot_product_attention has no attention dropout (use attn_backend=manual, or dropout=0)"
            )
        self.cfg = cfg
        dtype = DTYPES[cfg.precision]  # bf16: weights and compute in bf16, as torch's model.to(torch.bfloat16)
        # {PyTorch name: array in PyTorch layout}: loaded as trainables/weights.py draws them, read back as they are
        self.weights = {name: jnp.asarray(array, dtype) for name, array in initial_weights(cfg).items()}
        self.params = sum(int(np.prod(w.shape)) for w in self.weights.values())
        # torch.optim.AdamW's hyper-parameters; optax decays every parameter (mask=None), as torch does, and
        # p - lr * (adam + wd * p) is torch's p * (1 - lr * wd) - lr * adam (tests/test_jax_trainer.py checks one step)
        (beta1, beta2), eps, decay = ADAMW["betas"], ADAMW["eps"], ADAMW["weight_decay"]
        self.optimizer = optax.adamw(cfg.learning_rate, b1=beta1, b2=beta2, eps=eps, weight_decay=decay)
        self.opt_state = self.optimizer.init(self.weights)
        # dropout's random stream; None without dropout, so no random numbers are drawn at all
        self.key = jax.random.key(cfg.seed) if cfg.dropout > 0 else None
        self.compiled_step = None  # compile=jit: the executable the first step() compiles and every step runs
        self.dots = None  # facts(): {backend: number of dots}, read back once
        self.step_cache_events: Counter = Counter()  # the persistent cache's requests and hits of the step's compile
        jax.block_until_ready((self.weights, self.opt_state))

    # ---- the training step ----------------------------------------------------------------------------------------
    def micro_batch_loss(self, weights, inputs, targets, key):
        return gpt_loss(weights, self.cfg, inputs, targets, key) / self.cfg.grad_accum

    def train_step(self, weights, opt_state, key, micro_batches):
        """(weights, opt_state, key, summed loss) after one AdamW update over the gradients summed over micro-batches."""
        step_key, next_key = jax.random.split(key) if key is not None else (None, None)
        if self.cfg.compile == "jit" and len(micro_batches) > 1:
            loss_sum, grad_sum = self.scanned_gradients(weights, micro_batches, step_key)
        else:
            loss_sum, grad_sum = self.looped_gradients(weights, micro_batches, step_key)
        updates, opt_state = self.optimizer.update(grad_sum, opt_state, weights)
        return optax.apply_updates(weights, updates), opt_state, next_key, loss_sum

    def looped_gradients(self, weights, micro_batches, key):
        """(summed loss, summed gradients), one micro-batch after another, as torch's eager loop runs them."""
        loss_and_grad = jax.value_and_grad(self.micro_batch_loss)
        loss_sum, grad_sum = None, None
        for index, (inputs, targets) in enumerate(micro_batches):
            loss, grads = loss_and_grad(weights, inputs, targets, _micro_key(key, index))
            loss_sum = loss if loss_sum is None else loss_sum + loss
            grad_sum = grads if grad_sum is None else jax.tree.map(jnp.add, grad_sum, grads)
        return loss_sum, grad_sum

    def scanned_gradients(self, weights, micro_batches, key):
        """looped_gradients as one lax.scan under jit: the loop unrolled made XLA compile the model grad_accum times
        (measured: the quick baseline's first step 3.1 s at grad_accum=1, 11.3 s at 4)."""
        loss_and_grad = jax.value_and_grad(self.micro_batch_loss)
        inputs = jnp.stack([x for x, _ in micro_batches])  # grad_accum x (B, T) -> (grad_accum, B, T)
        targets = jnp.stack([y for _, y in micro_batches])  # grad_accum x (B, T) -> (grad_accum, B, T)

        def add_micro_batch(sums, batch):
            index, x, y = batch
            loss, grads = loss_and_grad(weights, x, y, _micro_key(key, index))
            return (sums[0] + loss, jax.tree.map(jnp.add, sums[1], grads)), None

        zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, weights))
        indices = jnp.arange(len(micro_batches))
        return lax.scan(add_micro_batch, zeros, (indices, inputs, targets))[0]

    def compile_step(self, micro_batches) -> None:
        # weights and optimizer state are donated: the update writes into their buffers instead of new ones
        jitted = jax.jit(self.train_step, donate_argnums=(0, 1))
        before = Counter(CACHE_EVENTS)
        self.compiled_step = jitted.lower(self.weights, self.opt_state, self.key, micro_batches).compile()
        self.step_cache_events = CACHE_EVENTS - before

    def step(self, micro_batches):
        if self.cfg.compile == "jit":
            if self.compiled_step is None:
                self.compile_step(micro_batches)
            run = self.compiled_step
        else:
            run = self.train_step
        self.weights, self.opt_state, self.key, loss = run(self.weights, self.opt_state, self.key, micro_batches)
        jax.block_until_ready((self.weights, self.opt_state, loss))
        return loss

    def make_batches(self, tokens: np.ndarray, count: int):
        """The same windows of the token stream in every framework (trainables/weights.py), as int32 jax arrays."""
        batches = [
            (jnp.asarray(x.astype(np.int32)), jnp.asarray(y.astype(np.int32)))
            for x, y in sample_batches(tokens, self.cfg, count)
        ]
        return jax.block_until_ready(batches)

    def loss_value(self, loss) -> float:
        return float(loss)

    # ---- parity ---------------------------------------------------------------------------------------------------
    def current_weights(self) -> dict[str, np.ndarray]:
        return {name: np.asarray(p).astype(np.float32) for name, p in self.weights.items()}

    def parameter_gradients(self, inputs, targets) -> tuple[float, dict[str, np.ndarray]]:
        loss_and_grad = jax.value_and_grad(self.micro_batch_loss)
        if self.cfg.compile == "jit":  # the backend's compiled kernels, as step() runs them
            loss_and_grad = jax.jit(loss_and_grad)
        key = jax.random.fold_in(self.key, 0) if self.key is not None else None
        inputs, targets = (jnp.asarray(np.asarray(a).astype(np.int32)) for a in (inputs, targets))
        loss, grads = loss_and_grad(self.weights, inputs, targets, key)
        return float(loss), {name: np.asarray(g).astype(np.float32) for name, g in grads.items()}

    def save(self, folder: Path) -> None:
        from safetensors.numpy import save_file

        # in the weights' own dtype (bf16 stays bf16, as torch saves it), PyTorch names and layout, wte once (tied)
        save_file({name: np.asarray(p) for name, p in self.weights.items()}, str(Path(folder) / "model.safetensors"))

    # ---- what ran -------------------------------------------------------------------------------------------------
    def facts(self) -> dict:
        pool = xla_pool_threads()
        if self.cfg.threads is not None and pool != self.cfg.threads:
            raise RuntimeError(
                f"threads={self.cfg.threads} but XLA's CPU pool ran {pool} {XLA_POOL_THREAD} threads (it sizes itself "
                "from the process's CPU affinity): a row measured with other thread counts than its config is wrong"
            )
        dots = self.read_back_dots()
        return {
            "jax_version": jax.__version__,
            "jaxlib_version": jaxlib.__version__,
            "jax_backend": jax.default_backend(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "blas_used": "+".join(dots),
            "xla_dots": dict(dots),
            "xla_dots_source": DOTS_FROM_STEP_HLO if self.cfg.compile == "jit" else DOTS_FROM_EAGER,
            "thread_pools": {"xla_eigen": pool},
        } | self.compile_facts()

    def compile_facts(self) -> dict:
        """What the compiler keys did (compile=jit; {} for eager): the fusions of the step's optimized HLO, and the
        persistent cache the step's compile found its executable in (a hit) or not (a miss), with where it is."""
        if self.cfg.compile != "jit":
            return {}
        requests, hits = self.step_cache_events[CACHE_REQUEST], self.step_cache_events[CACHE_HIT]
        return xla_kernel_counts(self.compiled_step.as_text()) | {
            "jit_cache_dir": jax.config.jax_compilation_cache_dir,
            "jit_cache_hits": hits,
            "jit_cache_misses": requests - hits,
            "fusion_settings": {"xla_disable_hlo_passes": list(XLA_FUSION_OFF_PASSES)}
            if self.cfg.fusion == "off"
            else None,
        }

    def read_back_dots(self) -> dict[str, int]:
        """{backend: dots it ran}, most dots first, for the step as this trial runs it."""
        if self.dots is None:
            batches = [(jnp.zeros((self.cfg.batch_size, self.cfg.seq_len), jnp.int32),) * 2] * self.cfg.grad_accum
            if self.cfg.compile == "jit":
                if self.compiled_step is None:
                    self.compile_step(batches)
                counts = dots_by_backend(self.compiled_step.as_text())
            else:
                jaxpr = jax.make_jaxpr(self.train_step)(self.weights, self.opt_state, self.key, batches)
                counts = eager_dots_by_backend(jaxpr.jaxpr)
            self.dots = dict(counts.most_common())
        return self.dots

    def matmul_peak(self, threads: int, cache_dir: Path) -> dict:
        """The peak MFU divides by: jnp.dot under jax.jit in this worker, so on the trial's XLA flags (backend), CPUs
        and pool, cached per backend (hwctl/microbench.py cached_peak). bf16's where the trial computes in bf16 and
        the CPU does bf16 natively; fp32's otherwise, since without native bf16 the kernels convert and run fp32."""
        reason = _pool_mismatch(threads)
        if reason:
            raise RuntimeError(reason)
        fp32 = self.dot_peak("float32", threads, cache_dir)
        peak, method = fp32, fp32["peak_method"]
        if self.cfg.precision == "bf16":
            not_native = bf16_native_reason(None)
            if not_native:
                method = f"fp32 peak, as bf16 is not native here ({not_native}): {method}"
            else:
                peak = self.dot_peak("bfloat16", threads, cache_dir)
                method = peak["peak_method"]
        return {
            "peak_gflops": peak["peak_gflops"],
            "peak_dtype": "fp32" if peak is fp32 else "bf16",
            "peak_gflops_fp32": fp32["peak_gflops"],
            "peak_method": method,
            "peak_cached": fp32["peak_cached"] and peak["peak_cached"],
            "matmul_library": " + ".join(f"xla {name} ({HLO_MARKERS[name]})" for name in self.read_back_dots()),
        }

    def dot_peak(self, dtype_name: str, threads: int, cache_dir: Path) -> dict:
        method = (
            f"best GFLOP/s of jnp.dot under jax.jit {dtype_name} square n in {MATMUL_SIZES} (2n^3 FLOPs), after one "
            f"warm-up call, up to {MATMUL_REPEATS} calls or {MATMUL_SECONDS_PER_SIZE} s per n, block_until_ready, "
            f"XLA backend {self.cfg.blas}, in the measuring process"
        )
        return cached_peak(
            f"jax.jnp.dot {self.cfg.blas}",
            dtype_name,
            threads,
            cache_dir,
            partial(measure_dot_peak_gflops, dtype_name),
            method,
            torch_kernel=False,
        )


def measure_dot_peak_gflops(dtype_name: str) -> float:
    """Best GFLOP/s of square jnp.dot under jax.jit, on XLA's pool as this process runs it."""
    dot = jax.jit(jnp.dot)
    rng = np.random.default_rng(0)
    best = 0.0
    for n in MATMUL_SIZES:
        a32, b32 = (jnp.asarray(rng.standard_normal((n, n), dtype=np.float32)) for _ in range(2))
        a, b = a32.astype(dtype_name), b32.astype(dtype_name)
        product = dot(a, b).block_until_ready()  # first call: compilation and allocations
        if dtype_name != "float32" and n == MATMUL_SIZES[0]:
            # a fast kernel that computes the wrong thing is not a peak: bf16 output rounding is ~0.4%
            reference = dot(a.astype(jnp.float32), b.astype(jnp.float32))
            error = float(jnp.linalg.norm(product.astype(jnp.float32) - reference) / jnp.linalg.norm(reference))
            if error > 0.02:
                raise RuntimeError(
                    f"jnp.dot {dtype_name} differs from fp32 by {error:.3f} (relative): not measuring it"
                )
        spent = 0.0
        for _ in range(MATMUL_REPEATS):
            start = time.perf_counter()
            dot(a, b).block_until_ready()
            elapsed = time.perf_counter() - start
            best, spent = max(best, 2 * n**3 / elapsed / 1e9), spent + elapsed
            if spent > MATMUL_SECONDS_PER_SIZE:
                break
    return best


# ---- reading back which backend ran the matmuls ---------------------------------------------------------------------
COMPUTATION_HEADER = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
CALLS = re.compile(r"calls=%?([\w.\-]+)")
FUSION_KIND = re.compile(r'"kind":"(__\w+)"')


def dots_by_backend(hlo_text: str) -> Counter:
    """Count the dot instructions of optimized HLO text by the backend that runs them: a dot inside a computation
    that a `__ynn_fusion` / `__onednn_fusion` calls runs there; any other dot is XLA's own (Eigen)."""
    fused_by: dict[str, str] = {}
    dots_in: Counter = Counter()
    computation = None
    for line in hlo_text.splitlines():
        header = COMPUTATION_HEADER.match(line)
        if header and "=" not in line.split("{")[0].split("->")[0].split("(")[0]:
            computation = header.group(1)
            continue
        kind, callee = FUSION_KIND.search(line), CALLS.search(line)
        if kind and callee and kind.group(1) in FUSION_KINDS:
            fused_by[callee.group(1)] = FUSION_KINDS[kind.group(1)]
        if " dot(" in line:
            dots_in[computation] += 1
    counts: Counter = Counter()
    for name, count in dots_in.items():
        counts[fused_by.get(name, "eigen")] += count
    return counts


def _sub_jaxprs(eqn):
    for value in eqn.params.values():
        for item in value if isinstance(value, (list, tuple)) else (value,):
            inner = getattr(item, "jaxpr", item)  # a ClosedJaxpr holds its Jaxpr
            if hasattr(inner, "eqns"):
                yield inner


def eager_dots_by_backend(jaxpr) -> Counter:
    """Eager dispatch compiles each primitive alone with the process's XLA flags: compile every distinct dot_general
    of the step that way and read its HLO, counted as often as the step runs it."""
    counts: Counter = Counter()
    seen: dict = {}
    pending = [jaxpr]
    while pending:
        for eqn in pending.pop().eqns:
            pending.extend(_sub_jaxprs(eqn))
            if eqn.primitive is not lax.dot_general_p:
                continue
            avals = tuple(jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in eqn.invars)
            signature = (avals, tuple(sorted((k, str(v)) for k, v in eqn.params.items())))
            if signature not in seen:
                dot = jax.jit(partial(lax.dot_general_p.bind, **eqn.params))
                (seen[signature],) = dots_by_backend(dot.lower(*avals).compile().as_text()) or ("eigen",)
            counts[seen[signature]] += 1
    return counts


def _micro_key(key, index):
    """Micro-batch `index`'s dropout stream of a step; None without dropout."""
    return jax.random.fold_in(key, index) if key is not None else None
