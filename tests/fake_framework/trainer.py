"""The fake framework's trainer: a factorised bigram LM in pure NumPy, trained with a hand-written gradient and Adam.

It shows that a framework plugs in through trainables/trainer.py alone (registered for a test with
BENCH_TRAINERS="fake=tests.fake_framework", or as the bare class "fake=tests.fake_framework.trainer:FakeTrainer"),
and it takes the fused-step path a JAX trainer would take.
It is not the GPT of the config: the row's FLOPs and MFU describe the configured model, so here they only test
the plumbing. Its facts() fails the trial if anything loaded torch, which is how the tests see that the worker
imports no framework but the trial's.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import threadpoolctl

from trainables.trainer import Trainer

PEAK_SIZES = (256, 512, 1024)
PEAK_REPEATS = 3
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8


class FakeTrainer(Trainer):
    NAME = "fake"
    FUSED_STEP = True

    @classmethod
    def configure_threads(cls, threads: int, interop_threads: int) -> None:
        threadpoolctl.threadpool_limits(threads, user_api="blas")

    def __init__(self, cfg):
        self.cfg = cfg
        rng = np.random.default_rng(cfg.seed)
        # logits = embedding[token] @ unembedding: a bigram table of rank `width`
        self.weights = {
            "embedding": rng.normal(0, 0.02, (cfg.vocab_size, cfg.width)).astype(np.float32),
            "unembedding": rng.normal(0, 0.02, (cfg.width, cfg.vocab_size)).astype(np.float32),
        }
        self.moments = {name: (np.zeros_like(w), np.zeros_like(w)) for name, w in self.weights.items()}
        self.updates = 0
        self.params = sum(w.size for w in self.weights.values())

    def make_batches(self, tokens: np.ndarray, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
        rng = np.random.default_rng(self.cfg.seed)
        seq, batch = self.cfg.seq_len, self.cfg.batch_size
        batches = []
        for _ in range(count):
            starts = rng.integers(0, len(tokens) - seq - 1, size=batch)
            rows = np.stack([tokens[s : s + seq + 1] for s in starts]).astype(np.int64)
            batches.append((rows[:, :-1], rows[:, 1:]))
        return batches

    def step(self, micro_batches: list[tuple[np.ndarray, np.ndarray]]) -> float:
        grads = {name: np.zeros_like(w) for name, w in self.weights.items()}
        loss_sum = 0.0
        for inputs, targets in micro_batches:
            loss_sum += self._loss_and_gradient(inputs.reshape(-1), targets.reshape(-1), grads) / self.cfg.grad_accum
        self._adam_update(grads)
        return loss_sum

    def _loss_and_gradient(self, inputs: np.ndarray, targets: np.ndarray, grads: dict) -> float:
        """Mean cross-entropy of one micro-batch; adds its gradient / grad_accum to `grads`."""
        hidden = self.weights["embedding"][inputs]  # (B*T, width)
        logits = hidden @ self.weights["unembedding"]  # (B*T, vocab)
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        rows = np.arange(len(targets))
        loss = float(-np.log(probs[rows, targets]).mean())
        dlogits = probs  # d(mean cross-entropy)/d logits = (softmax - one_hot) / count
        dlogits[rows, targets] -= 1.0
        dlogits /= len(targets) * self.cfg.grad_accum
        grads["unembedding"] += hidden.T @ dlogits
        np.add.at(grads["embedding"], inputs, dlogits @ self.weights["unembedding"].T)
        return loss

    def _adam_update(self, grads: dict) -> None:
        self.updates += 1
        (beta1, beta2), lr = ADAM_BETAS, self.cfg.learning_rate
        for name, weight in self.weights.items():
            first, second = self.moments[name]
            first *= beta1
            first += (1 - beta1) * grads[name]
            second *= beta2
            second += (1 - beta2) * grads[name] ** 2
            corrected_first = first / (1 - beta1**self.updates)
            corrected_second = second / (1 - beta2**self.updates)
            weight -= lr * corrected_first / (np.sqrt(corrected_second) + ADAM_EPS)

    def loss_value(self, loss: float) -> float:
        return float(loss)

    def facts(self) -> dict:
        if "torch" in sys.modules:
            raise AssertionError("torch is loaded in a framework=fake trial: the worker imported it")
        blas = sorted({pool["internal_api"] for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"})
        return {"blas_used": ",".join(blas) or "unknown"}

    def matmul_peak(self, threads: int, cache_dir: Path) -> dict:
        best = 0.0
        with threadpoolctl.threadpool_limits(threads, user_api="blas"):
            for n in PEAK_SIZES:
                a, b = np.ones((n, n), np.float32), np.ones((n, n), np.float32)
                np.matmul(a, b)  # first call: allocation and thread start-up
                for _ in range(PEAK_REPEATS):
                    start = time.perf_counter()
                    np.matmul(a, b)
                    best = max(best, 2 * n**3 / (time.perf_counter() - start) / 1e9)
        method = (
            f"best GFLOP/s of np.matmul float32 square n in {PEAK_SIZES} (2n^3 FLOPs), after one warm-up call, "
            f"{PEAK_REPEATS} calls per n on {threads} BLAS threads, not cached"
        )
        return {"peak_gflops_fp32": best, "peak_method": method, "peak_cached": False}

    def save(self, folder: Path) -> None:
        np.savez(Path(folder) / "model.npz", **self.weights)
