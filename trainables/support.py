"""What a framework declares it can run: the type of each framework package's `support.py`.

A declaration is read in every process that validates a config (the sweep's driver included), so it is plain data
plus hooks that import no framework: config validation (trainables/validation.py) holds a trial to its values, the
memory estimate and the FLOP count read its facts, and the launcher calls its hooks before the worker starts
(trainables/launcher.py). The trainer registry (trainables/trainer.py) finds it by the framework's name.

Hooks take the trial's validated TrialConfig as `cfg`, unannotated here and in every declaration: importing
trainables/config.py, even for a type, would tie a declaration to modules that load NumPy (tests/test_import_rules.py).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIB = 2**20
# the keys whose values each framework lists (the first is its auto: what None in the config resolves to)
DECLARED_KEYS = ("compile", "attn_backend", "precision", "optimizer", "blas")
# A framework registered as name=module:Class declares nothing: these are its autos (those every framework had before
# frameworks declared their values); blas stays auto, as the framework's own choice.
UNDECLARED_AUTOS = {"compile": "eager", "attn_backend": "sdpa"}


def load_target(target: str) -> Any:
    """The object a 'module:attribute' string names, importing its module now."""
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True, kw_only=True)
class FrameworkSupport:
    trainer: str  # "module:Class" of its Trainer: imported by the worker, never by validation
    declared: bool = True  # False: registered as name=module:Class, held to the keys' CHOICES only
    # the values of each DECLARED_KEYS key it can run, its auto first (empty: undeclared)
    compile: tuple[str, ...] = ()
    attn_backend: tuple[str, ...] = ()
    precision: tuple[str, ...] = ()
    optimizer: tuple[str, ...] = ()
    blas: tuple[str, ...] = ()
    # blas values that change fp32 arithmetic (value -> how): autotune, which keeps what a trial computes, skips them
    blas_changes_numerics: Mapping[str, str] = field(default_factory=dict)
    # the framework-specific keys it applies (trainables/keys.py FRAMEWORK_SPECIFIC_KEYS); it must leave the others at
    # their defaults
    honours: frozenset[str] = frozenset()
    # compile values that generate C++ code, whose build cxx, cxx_opt, march and simdlen set
    native_code_compiles: tuple[str, ...] = ()
    fusing_compiles: tuple[str, ...] = ()  # compile values with fusion passes that fusion=off turns off
    warm_cache_refusals: Mapping[str, str] = field(default_factory=dict)  # compile -> why jit_cache=warm cannot run it
    compile_cache: str | None = None  # the folder of its compile cache inside a trial's cache folder
    # memory (trainables/memory.py): the worker's resident footprint apart from the model, and what a compile adds
    runtime_bytes: int = 0
    compile_runtime_bytes: Mapping[str, int] = field(default_factory=dict)
    glibc_heap_slack: bool = False  # glibc malloc keeps freed gradient-sized holes resident beside the next ones
    # the kernel attn_backend=sdpa runs, for the FLOP count (trainables/flops.py): sdpa-flash (it falls back to
    # sdpa-math with dropout) or sdpa-xla
    sdpa_kernel: str = "sdpa-flash"

    def values(self, key: str) -> tuple[str, ...]:
        """What it can run of a DECLARED_KEYS key; () when it declares nothing."""
        return getattr(self, key)

    def auto(self, key: str) -> str | None:
        """What None in the config resolves to for a DECLARED_KEYS key."""
        values = self.values(key)
        return values[0] if values else UNDECLARED_AUTOS.get(key)

    def config_error(self, cfg) -> str | None:
        """Why `cfg` cannot run with this framework beyond its declared values (a rule between its own keys), or None.
        Called by validation with head_dim and kv_heads resolved."""
        return None

    def worker_environment(self, cfg, inherited: Mapping[str, str]) -> dict[str, str]:
        """Variables its worker needs before the framework starts; `inherited`: the launcher's own environment."""
        return {}

    def compile_environment(self, cfg, cache_dir: Path) -> dict[str, str]:
        """Variables the worker of a compiled trial starts with, its compile cache in `cache_dir` (a fresh, empty
        folder for jit_cache=cold; for warm, the one an earlier worker of the same config compiled into). {} for
        eager, or a framework that keeps no compile cache."""
        if cfg.compile == "eager" or self.compile_cache is None:
            return {}
        cache_dir = Path(cache_dir).absolute()
        cache = cache_dir / self.compile_cache
        if cfg.jit_cache == "cold" and cache.exists() and any(cache.iterdir()):
            raise ValueError(f"jit_cache=cold needs an empty compile cache, and {cache} holds a primed one")
        cache.mkdir(parents=True, exist_ok=True)
        return self.compiler_environment(cfg, cache_dir, cache)

    def compiler_environment(self, cfg, cache_dir: Path, cache: Path) -> dict[str, str]:
        """compile_environment's framework part: `cache` is its compile cache folder, made and checked."""
        return {}

    def unsupported_reason(self, cfg) -> str | None:
        """Why this node cannot run `cfg` with this framework (a compiler, an instruction set or a kernel it lacks), or
        None. Called at plan validation and before each trial."""
        return None
