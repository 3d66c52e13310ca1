"""The rules a trial config must satisfy, checked once at the edge; validate() also resolves the autos it can.

Each failure is a ConfigError naming the key, the value and what is allowed. What a framework can run is its
declaration (trainables/support.py, found through trainables/trainer.py): a new framework brings its own and changes
nothing here.
"""

from __future__ import annotations

import math

from hwctl.cores import parse_cpu_list
from hwctl.isa import ISA_CAPS
from trainables.keys import (
    CHOICES,
    DEFAULT_DATASET,
    FRAMEWORK_SPECIFIC_KEYS,
    NOT_SUPPORTED_YET,
    SIMDLENS,
    ConfigError,
)
from trainables.support import DECLARED_KEYS, FrameworkSupport
from trainables.trainer import framework_names, framework_support
from trainables.trial_config import TrialConfig


def _check_choice(cfg: TrialConfig, key: str) -> None:
    value = getattr(cfg, key)
    if value is None:  # an auto the framework resolves (blas)
        return
    if value in CHOICES[key]:
        return
    if value in NOT_SUPPORTED_YET.get(key, ()):
        raise ConfigError(f"{key}={value!r} is not supported yet (supported now: {', '.join(CHOICES[key])})")
    allowed = ", ".join(CHOICES[key] + NOT_SUPPORTED_YET.get(key, ()))
    raise ConfigError(f"unknown {key} {value!r} ({allowed})")


def _resolve_framework_autos(cfg: TrialConfig, support: FrameworkSupport) -> TrialConfig:
    """compile, attn_backend, blas: None -> the framework's first declared value; blas's is left out of config_key
    (as asked; blas_used: as it ran). A framework that declares nothing keeps blas auto."""
    autos = {key: support.auto(key) for key in DECLARED_KEYS if getattr(cfg, key) is None}
    return cfg.replace(**autos) if autos else cfg


def _check_framework_support(cfg: TrialConfig, support: FrameworkSupport) -> None:
    if not support.declared:
        return
    for key in DECLARED_KEYS:
        value, values = getattr(cfg, key), support.values(key)
        if value is not None and value not in values:
            raise ConfigError(
                f"{key}={value!r} cannot run with framework={cfg.framework!r} (it supports {key} {', '.join(values)})"
            )
    for key, default in FRAMEWORK_SPECIFIC_KEYS.items():
        if key not in support.honours and getattr(cfg, key) != default:
            honouring = [name for name in framework_names() if key in framework_support(name).honours]
            applied = f"only by {' or '.join(f'framework={name!r}' for name in honouring)}" if honouring else "by none"
            raise ConfigError(
                f"{key}={getattr(cfg, key)!r} is applied {applied}; framework={cfg.framework!r} "
                f"needs {key}={default if default is not None else 'auto'}"
            )


def _check_range(key: str, value, low, high=math.inf) -> None:
    if not (low <= value <= high):
        bound = f">= {low}" if high == math.inf else f"in [{low}, {high}]"
        raise ConfigError(f"{key}={value} must be {bound}")


def validate(cfg: TrialConfig) -> TrialConfig:
    """Check every knob and resolve model-level autos; returns the resolved config."""
    _check_choice(cfg, "framework")
    support = framework_support(cfg.framework)
    cfg = _resolve_framework_autos(cfg, support)
    for key in CHOICES:
        _check_choice(cfg, key)
    _check_framework_support(cfg, support)
    for key in ("depth", "width", "heads", "seq_len", "batch_size", "grad_accum", "interop_threads"):
        _check_range(key, getattr(cfg, key), 1)
    _check_range("vocab_size", cfg.vocab_size, 256, 2**20)
    _check_range("mlp_ratio", cfg.mlp_ratio, 0.25, 16)
    _check_range("dropout", cfg.dropout, 0.0, 0.9)
    _check_range("learning_rate", cfg.learning_rate, 1e-7, 1.0)
    _check_range("seed", cfg.seed, 0)
    _check_range("timeout_s", cfg.timeout_s, 1.0)
    _check_range("freeze_layers", cfg.freeze_layers, 0, cfg.depth - 1)  # at least one block must train

    head_dim = cfg.head_dim
    if head_dim is None:
        if cfg.width % cfg.heads:
            raise ConfigError(
                f"heads={cfg.heads} must divide width={cfg.width} when head_dim is auto (or set head_dim)"
            )
        head_dim = cfg.width // cfg.heads
    _check_range("head_dim", head_dim, 1)
    kv_heads = cfg.heads if cfg.kv_heads is None else cfg.kv_heads
    _check_range("kv_heads", kv_heads, 1)
    if cfg.heads % kv_heads:
        raise ConfigError(f"kv_heads={kv_heads} must divide heads={cfg.heads}")

    recipe = support.config_error(cfg.replace(head_dim=head_dim, kv_heads=kv_heads))  # a rule between its own keys
    if recipe:
        raise ConfigError(recipe)
    if cfg.attention != "full":
        _check_range("window", cfg.window, 1)
        if cfg.window > cfg.seq_len:
            raise ConfigError(f"window={cfg.window} exceeds seq_len={cfg.seq_len}")
        if cfg.attention == "local" and cfg.seq_len % cfg.window:
            raise ConfigError(
                f"attention=local splits the sequence into blocks: window={cfg.window} must divide seq_len={cfg.seq_len}"
            )
    if cfg.threads is not None:
        _check_range("threads", cfg.threads, 1)
    if cfg.cores is not None:
        _check_range("cores", cfg.cores, 1)
    if cfg.core_list is not None:
        try:
            cpus = parse_cpu_list(cfg.core_list)
        except ValueError:
            raise ConfigError(f"core_list={cfg.core_list!r} is not a CPU list like '0,2' or '0-3'") from None
        if not cpus or len(set(cpus)) != len(cpus):
            raise ConfigError(f"core_list={cfg.core_list!r} must name distinct CPUs")
        if cfg.cores is not None and cfg.cores != len(cpus):
            raise ConfigError(f"cores={cfg.cores} disagrees with core_list={cfg.core_list!r} ({len(cpus)} CPUs)")
    if cfg.freq_ghz is not None:
        _check_range("freq_ghz", cfg.freq_ghz, 0.1, 10.0)
    if cfg.isa is not None and cfg.isa not in ISA_CAPS:
        raise ConfigError(f"unknown isa {cfg.isa!r} ({', '.join(ISA_CAPS)})")
    if cfg.memory_cap_mb is not None:
        _check_range("memory_cap_mb", cfg.memory_cap_mb, 64)
    jit_cache = _check_compile_keys(cfg, support)
    _check_system_keys(cfg)
    if cfg.dataset_tokens is not None:  # a batch row is a window of seq_len + 1 tokens, at one of >= 1 offsets
        _check_range("dataset_tokens", cfg.dataset_tokens, cfg.seq_len + 2)

    dataset = cfg.dataset
    if dataset is None:
        from trainables.dataset import resolve_auto_dataset  # a heavy import: only when there is an auto to resolve

        dataset = resolve_auto_dataset(DEFAULT_DATASET)

    compiled = cfg.compile != "eager"
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else (3 if compiled else 2)
    measure = cfg.measure_steps if cfg.measure_steps is not None else 10
    seconds = cfg.measure_seconds if cfg.measure_seconds is not None else 60.0
    _check_range("warmup_steps", warmup, 0)
    _check_range("measure_steps", measure, 1)
    _check_range("measure_seconds", seconds, 0.0)
    return cfg.replace(
        head_dim=head_dim,
        kv_heads=kv_heads,
        warmup_steps=warmup,
        measure_steps=measure,
        measure_seconds=seconds,
        dataset=dataset,
        jit_cache=jit_cache,
    )


def _check_compile_keys(cfg: TrialConfig, support: FrameworkSupport) -> str | None:
    """The compiler keys against `compile` and what the framework's compilers do; returns jit_cache resolved (cold
    for a compiled trial, None for eager)."""
    fusing, native = support.fusing_compiles, support.native_code_compiles
    if cfg.fusion == "off" and cfg.compile not in fusing:
        passes = f"compile {', '.join(fusing)}" if fusing else f"framework={cfg.framework!r} has none"
        raise ConfigError(
            f"fusion='off' needs a compiler with fusion passes ({passes}); compile={cfg.compile!r} fuses nothing"
        )
    for key in ("cxx", "cxx_opt", "march", "simdlen"):
        if getattr(cfg, key) is not None and cfg.compile not in native:
            if native:
                needs = f"it needs compile {' or '.join(native)}, not {cfg.compile!r}"
            else:
                needs = f"no compile of framework={cfg.framework!r} generates any"
            raise ConfigError(f"{key}={getattr(cfg, key)!r} sets how generated C++ code is built: {needs}")
    if cfg.simdlen is not None and cfg.simdlen not in SIMDLENS:
        raise ConfigError(f"simdlen={cfg.simdlen} must be one of {', '.join(map(str, SIMDLENS))} (bits; 0: scalar)")
    if cfg.compile == "eager":
        if cfg.jit_cache is not None:
            raise ConfigError(f"jit_cache={cfg.jit_cache!r} needs a compiled trial: compile='eager' caches nothing")
        return None
    if cfg.jit_cache == "warm" and cfg.compile in support.warm_cache_refusals:
        raise ConfigError(
            f"jit_cache='warm' cannot run with compile={cfg.compile!r}: {support.warm_cache_refusals[cfg.compile]}"
        )
    return cfg.jit_cache or "cold"  # explicit: a compiled trial never runs on whatever cache the last run left


def _check_system_keys(cfg: TrialConfig) -> None:
    if cfg.gomp_spincount is not None:
        _check_range("gomp_spincount", cfg.gomp_spincount, 0)
    if cfg.smt == "siblings":
        if cfg.core_list is not None:
            raise ConfigError("smt='siblings' chooses the CPUs itself: leave core_list auto (core_list names them)")
        if cfg.pinning == "none":
            raise ConfigError("smt='siblings' places threads on sibling pairs: it needs pinning compact or spread")
    if cfg.numa is not None and cfg.numa not in ("local", "interleave") and not cfg.numa.isdigit():
        raise ConfigError(f"numa={cfg.numa!r}: give local, interleave or a NUMA node id (0, 1, ...)")
