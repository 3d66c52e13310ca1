"""What every training framework implements, and the registry that finds one by the config's `framework`.

A trainer owns everything framework-specific of a trial: thread pools, model, batches, the training step, the matmul
peak MFU divides by, facts about itself and saving. The worker and the timing protocol only call these methods, so a
new framework is one module here plus one registry entry. This module imports no framework, and not the config
either (config.py reads the registry).

Registry: TRAINERS maps framework -> "module:Class", imported on first use (importing the config never imports torch).
More, e.g. for tests: BENCH_TRAINERS="fake=tests.fake_trainer:FakeTrainer[,name=module:Class]"; the worker inherits it.
"""

from __future__ import annotations

import importlib
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

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
    """'fake=tests.fake_trainer:FakeTrainer,b=m:B' -> {'fake': 'tests.fake_trainer:FakeTrainer', 'b': 'm:B'}."""
    trainers = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, target = (s.strip() for s in item.partition("="))
        module, _, class_name = target.partition(":")
        if not (name and module and class_name):
            raise ValueError(f"{ENV_VARIABLE}: {item!r} is not name=module:Class")
        trainers[name] = target
    return trainers


TRAINERS = {
    "torch": "trainables.torch_trainable:TorchTrainer",
    "jax": "trainables.jax_trainable:JaxTrainer",
    "numpy": "trainables.numpy_trainable:NumpyTrainer",
} | parse_trainers(os.environ.get(ENV_VARIABLE, ""))


def framework_names() -> tuple[str, ...]:
    return tuple(TRAINERS)


def load_trainer(framework: str) -> type[Trainer]:
    """The trainer class of `framework`, importing its module (and so its framework) now."""
    if framework not in TRAINERS:
        raise ValueError(f"framework={framework!r} has no trainer (registered: {', '.join(TRAINERS)})")
    module, _, class_name = TRAINERS[framework].partition(":")
    trainer_class = getattr(importlib.import_module(module), class_name)
    if not issubclass(trainer_class, Trainer):
        raise TypeError(f"{TRAINERS[framework]} is not a trainables.trainer.Trainer")
    return trainer_class
