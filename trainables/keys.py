"""The vocabulary of a trial's keys: the values each may take, the model presets, and the defaults that keep old keys.

Key names are the canonical keys of ../shared/MISSION.md. What each framework can run of these values is its own
declaration (trainables/<name>_backend/support.py, read through trainables/trainer.py), so nothing here names a
framework: a value a registered framework declares beyond this vocabulary becomes a choice as it registers.
"""

from __future__ import annotations

from trainables.support import DECLARED_KEYS
from trainables.trainer import framework_names, framework_support

DEFAULT_DATASET = "ThomasTheMaker/Arc-Corpus-sample"
# Model presets (GPT-2 sizes and a 2.7B): `model=small` expands to these keys; keys given beside it win.
MODEL_PRESETS = {
    "small": {"width": 768, "depth": 12, "heads": 12, "mlp_ratio": 4.0},
    "medium": {"width": 1024, "depth": 24, "heads": 16, "mlp_ratio": 4.0},
    "large": {"width": 1280, "depth": 36, "heads": 20, "mlp_ratio": 4.0},
    "xl": {"width": 1600, "depth": 48, "heads": 25, "mlp_ratio": 4.0},
    "2.7B": {"width": 2560, "depth": 32, "heads": 32, "mlp_ratio": 4.0},
}
VOCABULARY = {
    "framework": framework_names(),  # the trainer registry, BENCH_TRAINERS included
    "activation": ("gelu", "relu", "silu"),
    "attention": ("full", "local", "sliding"),
    "attn_backend": ("manual", "sdpa"),
    "precision": ("fp32", "bf16", "mixed", "q8", "q4", "bitnet"),
    "compile": ("eager", "inductor", "inductor-max-autotune", "aot_eager", "jit"),
    "fusion": ("on", "off"),
    "jit_cache": ("cold", "warm"),
    "cxx": ("g++", "clang++"),
    "cxx_opt": ("O1", "O2", "O3"),
    "march": ("native", "x86-64", "x86-64-v2", "x86-64-v3", "x86-64-v4"),
    "omp_proc_bind": ("false", "true", "close", "spread"),
    "omp_places": ("cores", "threads", "sockets"),
    "omp_wait": ("active", "passive"),
    "smt": ("cores", "siblings"),
    "optimizer": ("adamw", "sgd", "lamb", "lookahead"),
    "model": tuple(MODEL_PRESETS),
    "blas": ("mkl", "onednn-fp32", "onednn-bf16math", "onednn", "ynnpack", "eigen", "openblas"),
    "pinning": ("none", "compact", "spread"),
    "allocator": ("default", "jemalloc", "tcmalloc"),
}


def _with_declared_values(vocabulary: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """The vocabulary plus every value a registered framework declares beyond it, in registry order."""
    supports = [framework_support(name) for name in framework_names()]
    declared = {key: [value for s in supports for value in s.values(key)] for key in DECLARED_KEYS}
    return vocabulary | {
        key: vocabulary[key] + tuple(dict.fromkeys(v for v in values if v not in vocabulary[key]))
        for key, values in declared.items()
    }


CHOICES = _with_declared_values(VOCABULARY)
# Named in the spec, accepted by the parser, but not implemented yet: a clear error, not a crash (none at present).
NOT_SUPPORTED_YET: dict[str, tuple[str, ...]] = {}
# Keys a framework applies only where its declaration honours them: every other framework must leave them at these.
FRAMEWORK_SPECIFIC_KEYS = {
    "interop_threads": 1,
    "isa": None,
    "fused_linear_act": False,
    "freeze_layers": 0,
    "omp_proc_bind": None,
    "omp_places": None,
    "omp_wait": None,
    "gomp_spincount": None,
}
SIMDLENS = (0, 256, 512)
# Keys added after configs were first stored: at these values they stay out of config_key, so every earlier key holds.
KEY_DEFAULTS = {
    "optimizer": "adamw",
    "fused_linear_act": False,
    "freeze_layers": 0,
    "fusion": "on",
    "jit_cache": "cold",
    "smt": "cores",
}
# Knobs that change how a trial is run or kept, not what it measures: left out of config_key.
NOT_IN_KEY = ("timeout_s", "memory_cap_mb", "save_model")


class ConfigError(ValueError):
    """A user-caused problem with a trial configuration; the message names key, value and what is allowed."""
