"""What every training framework implements, and the registry that finds one by the config's `framework`.

A trainer owns everything framework-specific of a trial: thread pools, model, batches, the training step, the matmul
peak MFU divides by, facts about itself and saving. The worker and the timing protocol only call these methods. What a
framework can run is its declaration (trainables/support.py), which the registry also finds: a new framework is one
package, trainables/<name>_backend/ with support.py and trainer.py, plus one registry line. This module imports no
framework, and not the config either (config validation reads the registry).

Registry: TRAINERS maps framework -> its package (whose support.py holds SUPPORT, the declaration naming its trainer),
imported on first use (importing a declaration never imports its framework). More, e.g. for tests:
BENCH_TRAINERS="fake=tests.fake_framework[,name=package]"; the older form name=module:Class registers a trainer that
declares nothing (held to the keys' CHOICES only). The worker inherits the variable.
"""

from __future__ import annotations

import functools
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from trainables.support import FrameworkSupport, load_target

if TYPE_CHECKING:
    import numpy as np

ENV_VARIABLE = "BENCH_TRAINERS"


class Trainer(ABC):
    """One trial's model and optimizer in one framework.

    Implement forward / backward / optimizer_step (their times are reported apart), or, where autodiff fuses them
    (JAX value_and_grad), set FUSED_STEP = True and implement step(). Each call returns only once its work is done
    (block on asynchronous dispatch): the timing protocol reads the clock between calls.
    The worker calls configure_threads(), then constructs the class from the trial's TrialConfig.
    """

    NAME: ClassVar[str]
    FUSED_STEP: ClassVar[bool] = False
    params: int  # parameter count, set by __init__

    @classmethod  # noqa: B027 - an optional hook, empty on purpose
    def configure_threads(cls, threads: int, interop_threads: int) -> None:
        """Called before the class is constructed, before the framework starts its thread pools. Optional: the
        launcher already sets OMP_NUM_THREADS, MKL_NUM_THREADS and OPENBLAS_NUM_THREADS to `threads`."""

    @abstractmethod
    def make_batches(self, tokens: np.ndarray, count: int) -> list[tuple[Any, Any]]:
        """`count` (inputs, targets) micro-batches, prepared before the timed region."""

    def forward(self, inputs, targets) -> Any:
        """The loss of one micro-batch, already divided by grad_accum."""
        raise self._other_path()

    def backward(self, loss) -> None:
        raise self._other_path()

    def optimizer_step(self) -> None:
        raise self._other_path()

    def step(self, micro_batches: list[tuple[Any, Any]]) -> Any:
        """Forward, backward and update over all micro-batches; returns their summed loss (each / grad_accum)."""
        raise self._other_path()

    def _other_path(self) -> NotImplementedError:
        wanted = "step()" if self.FUSED_STEP else "forward(), backward() and optimizer_step()"
        return NotImplementedError(f"{type(self).__name__} has FUSED_STEP = {self.FUSED_STEP}: it implements {wanted}")

    def detach(self, loss) -> Any:
        """What the timing protocol keeps of a loss once its backward ran (torch: no autograd graph)."""
        return loss

    @abstractmethod
    def loss_value(self, loss) -> float:
        """A kept loss as a number; called after the timed region, where a device sync costs nothing measured."""

    @abstractmethod
    def facts(self) -> dict:
        """Row columns about the framework as it ran: version, BLAS, thread settings read back, compile details."""

    @abstractmethod
    def matmul_peak(self, threads: int, cache_dir: Path) -> dict:
        """The fp32 peak MFU divides by, from the framework's own matmul: peak_gflops_fp32, peak_method, peak_cached."""

    def memory_bandwidth(self, threads: int, cpus: list[int], cache_dir: Path, fingerprint_id: str | None) -> dict:
        """The triad bandwidth the roofline divides by (hwctl.microbench.memory_bandwidth_gbs: torch's triad, cached
        per fingerprint and threads): bandwidth_gbs, bandwidth_cached, bandwidth_method. Here in a child on the trial's
        CPUs, so a framework other than torch never loads torch beside its own OpenMP runtime (~2-4 s on a cache hit,
        mostly torch's import); the torch trainer reads it in-process. XLA_FLAGS is left out: the triad is no XLA
        kernel."""
        import json
        import subprocess
        import sys

        code = (
            "import json, os, sys; from pathlib import Path; os.sched_setaffinity(0, json.loads(sys.argv[1])); "
            "from hwctl.microbench import memory_bandwidth_gbs; "
            "print(json.dumps(memory_bandwidth_gbs(int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4] or None)))"
        )
        env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
        command = [sys.executable, "-c", code, json.dumps(cpus), str(threads), str(cache_dir), fingerprint_id or ""]
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
            raise RuntimeError(f"the triad's process exited {done.returncode}: {tail}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    @abstractmethod
    def save(self, folder: Path) -> None:
        """Write the weights into `folder` (the worker writes config.json beside them)."""

    # ---- parity: the same model on the same numbers in every framework (tests/test_framework_parity.py) ----------
    def current_weights(self) -> dict[str, np.ndarray]:
        """The weights now, as float32 arrays in trainables/weights.py's names and PyTorch layout."""
        raise NotImplementedError(f"{type(self).__name__} does not expose its weights")

    def parameter_gradients(self, inputs: np.ndarray, targets: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        """(loss, gradients) of one micro-batch given as int64 NumPy arrays: the loss forward() returns (mean
        cross-entropy / grad_accum) and its gradient for every weight, named and laid out as current_weights().
        Changes no weight and no optimizer state."""
        raise NotImplementedError(f"{type(self).__name__} does not expose its gradients")


def parse_trainers(text: str) -> dict[str, str]:
    """'fake=tests.fake_framework,b=m:B' -> {'fake': 'tests.fake_framework', 'b': 'm:B'}: a package, or a trainer class
    (module:Class) that declares nothing."""
    trainers = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, target = (s.strip() for s in item.partition("="))
        module, colon, class_name = target.partition(":")
        if not (name and module) or (colon and not class_name):
            raise ValueError(f"{ENV_VARIABLE}: {item!r} is not name=package or name=module:Class")
        trainers[name] = target
    return trainers


# framework -> its package (one line per framework); the first is the config's default framework
TRAINERS = {
    "torch": "trainables.torch_backend",
    "jax": "trainables.jax_backend",
    "numpy": "trainables.numpy_backend",
} | parse_trainers(os.environ.get(ENV_VARIABLE, ""))
DEFAULT_FRAMEWORK = next(iter(TRAINERS))


def framework_names() -> tuple[str, ...]:
    return tuple(TRAINERS)


def _known(framework: str) -> str:
    if framework not in TRAINERS:
        raise ValueError(f"framework={framework!r} has no trainer (registered: {', '.join(TRAINERS)})")
    return TRAINERS[framework]


@functools.cache
def framework_support(framework: str) -> FrameworkSupport:
    """The declaration of `framework`, from its package's support.py (no framework imported). A trainer registered
    as module:Class has none: it is held to the keys' CHOICES only, and the checks that pair keys (fusion=off, the C++
    compiler keys, a warm cache) allow what any declared framework allows."""
    target = _known(framework)
    if ":" not in target:
        support = load_target(f"{target}.support:SUPPORT")
        if not isinstance(support, FrameworkSupport):
            raise TypeError(f"{target}.support:SUPPORT is not a trainables.support.FrameworkSupport")
        return support
    declared = [framework_support(name) for name, other in TRAINERS.items() if ":" not in other]
    first = declared[0] if declared else FrameworkSupport(trainer="")
    return FrameworkSupport(
        trainer=target,
        declared=False,
        native_code_compiles=_union(s.native_code_compiles for s in declared),
        fusing_compiles=_union(s.fusing_compiles for s in declared),
        warm_cache_refusals={k: v for s in declared for k, v in s.warm_cache_refusals.items()},
        # its memory is unknown: estimated as the first declared framework's (the default one's)
        runtime_bytes=first.runtime_bytes,
        compile_runtime_bytes=first.compile_runtime_bytes,
    )


def _union(groups: Iterable[tuple[str, ...]]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(value for group in groups for value in group))


def load_trainer(framework: str) -> type[Trainer]:
    """The trainer class of `framework`, importing its module (and so its framework) now."""
    _known(framework)
    target = framework_support(framework).trainer
    trainer_class = load_target(target)
    if not issubclass(trainer_class, Trainer):
        raise TypeError(f"{target} is not a trainables.trainer.Trainer")
    return trainer_class
