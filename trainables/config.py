"""One dataclass for every knob of a trial, validated once at the edge.

Field names are the canonical keys of ../shared/MISSION.md: the same names are used on the
command line (`bench.py trial width=512`), in plan files and as Parquet columns.
`None` means "auto": model-level autos (head_dim, kv_heads, timing protocol) are resolved by
`validate()`, machine-level autos (threads) by the worker's launcher on the node that runs it,
so one config means "all cores" on every host. `dataset` is the exception: its auto is resolved by
`validate()` (on the node that expands the plan) into the dataset actually used, because a run on
the hub's data and a run on the offline corpus must not share a config_key (trainables/dataset.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, fields

from hwctl.cores import parse_cpu_list
from hwctl.isa import ISA_CAPS
from trainables.trainer import framework_names

DEFAULT_DATASET = "ThomasTheMaker/Arc-Corpus-sample"
# Model presets (GPT-2 sizes and a 2.7B): `model=small` expands to these keys; keys given beside it win.
MODEL_PRESETS = {
    "small": {"width": 768, "depth": 12, "heads": 12, "mlp_ratio": 4.0},
    "medium": {"width": 1024, "depth": 24, "heads": 16, "mlp_ratio": 4.0},
    "large": {"width": 1280, "depth": 36, "heads": 20, "mlp_ratio": 4.0},
    "xl": {"width": 1600, "depth": 48, "heads": 25, "mlp_ratio": 4.0},
    "2.7B": {"width": 2560, "depth": 32, "heads": 32, "mlp_ratio": 4.0},
}
CHOICES = {
    "framework": framework_names(),  # the trainer registry: torch, plus BENCH_TRAINERS
    "activation": ("gelu", "relu", "silu"),
    "attention": ("full", "local", "sliding"),
    "attn_backend": ("manual", "sdpa"),
    "precision": ("fp32", "bf16", "mixed", "q8", "q4", "bitnet"),
    # aot_eager: graph capture and AOTAutograd without Inductor's code generation (the no-fusion compiled baseline)
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
    "blas": ("mkl", "onednn", "ynnpack", "eigen", "openblas"),
    "pinning": ("none", "compact", "spread"),
    "allocator": ("default", "jemalloc", "tcmalloc"),
}
# Named in the spec, accepted by the parser, but not implemented yet: a clear error, not a crash.
NOT_SUPPORTED_YET = {
    "framework": tuple(name for name in ("jax", "numpy") if name not in framework_names()),
}
# What each built-in framework can really run; the first value is its auto (None in the config). A framework
# registered through BENCH_TRAINERS has no entry and is held to CHOICES only.
FRAMEWORK_SUPPORT = {
    "torch": {
        "compile": ("eager", "inductor", "inductor-max-autotune", "aot_eager"),
        "attn_backend": ("sdpa", "manual"),
        # q8, q4, bitnet: quantisation-aware training with torchao (trainables/quantization.py)
        "precision": ("fp32", "bf16", "mixed", "q8", "q4", "bitnet"),
        "optimizer": ("adamw", "sgd", "lamb", "lookahead"),
        # mkl: torch's fp32 GEMM (MKL SGEMM, seen in MKL_VERBOSE); onednn: the only switch that sends fp32 Linears
        # to oneDNN, torch.backends.mkldnn.matmul.fp32_precision = "bf16" (it lets oneDNN use bf16 math where the
        # CPU has it: the row's matmul_library names the kernel that ran)
        "blas": ("mkl", "onednn"),
    },
    "jax": {
        "compile": ("jit", "eager"),  # eager: jax without jax.jit, op by op
        "attn_backend": ("sdpa", "manual"),  # sdpa: jax.nn.dot_product_attention
        "precision": ("fp32", "bf16"),
        "optimizer": ("adamw",),
        # XLA's dot emitter, chosen by XLA_FLAGS (trainables/jax_trainable.py). eigen first: jaxlib 0.10.2's default
        # YNNPACK fusions can give wrong numbers under jit (jax-ml/jax#39103)
        "blas": ("eigen", "ynnpack", "onednn"),
    },
    "numpy": {
        "compile": ("eager",),
        "attn_backend": ("manual",),
        "precision": ("fp32",),
        "optimizer": ("adamw",),
        "blas": ("openblas",),  # the BLAS NumPy's wheel ships
    },
}
# Keys only torch's trainer honours: another framework must leave them at these values.
TORCH_ONLY = {
    "interop_threads": 1,
    "isa": None,
    "fused_linear_act": False,
    "freeze_layers": 0,
    # OpenMP is torch's thread pool (libgomp); XLA and OpenBLAS run their own
    "omp_proc_bind": None,
    "omp_places": None,
    "omp_wait": None,
    "gomp_spincount": None,
}
# compile values whose code Inductor generates: the only ones the C++ compiler keys change
INDUCTOR_COMPILES = ("inductor", "inductor-max-autotune")
# compile values with a compiler whose fusion passes `fusion=off` turns off
FUSING_COMPILES = (*INDUCTOR_COMPILES, "jit")
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


@dataclass(frozen=True)
class TrialConfig:
    framework: str = "torch"
    # model
    depth: int = 4
    width: int = 256
    heads: int = 4
    head_dim: int | None = None  # auto: width // heads
    kv_heads: int | None = None  # auto: heads (plain multi-head attention)
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    activation: str = "gelu"
    attention: str = "full"
    window: int = 128
    attn_backend: str | None = None  # auto: sdpa (torch, jax), manual (numpy)
    vocab_size: int = 8192
    # training
    seq_len: int = 256
    batch_size: int = 1
    grad_accum: int = 1
    precision: str = "fp32"
    compile: str | None = None  # auto: eager (torch, numpy), jit (jax)
    fusion: str = "on"  # off: the compiler's fusion passes turned off (compiled trials only)
    jit_cache: str | None = None  # cold: an empty compile cache; warm: one primed by a run in another process
    cxx: str | None = None  # Inductor's C++ compiler; auto: Inductor's (g++ or $CXX)
    cxx_opt: str | None = None  # optimisation level of Inductor's generated code; auto: Inductor's O3
    march: str | None = None  # -march of Inductor's generated code; auto: Inductor's native
    simdlen: int | None = None  # Inductor's vector width in bits (0: scalar code); auto: the widest the CPU has
    optimizer: str = "adamw"  # lookahead: Lookahead (k=5, alpha=0.5) around AdamW
    fused_linear_act: bool = False  # the MLP's up-projection and activation as one fused kernel
    freeze_layers: int = 0  # the first N transformer blocks get no gradient and no optimizer state
    model: str | None = None  # a preset of MODEL_PRESETS, expanded by build_config; a label in the row
    learning_rate: float = 1e-3
    seed: int = 0
    # a Hugging Face dataset name, a local .txt/.json/.jsonl/.parquet/.csv file, or "offline";
    # auto: DEFAULT_DATASET where this node can have it (hub or cache), else "offline"
    dataset: str | None = None
    dataset_tokens: int | None = None  # train on the first N tokens of the corpus; auto: all of it
    # system
    threads: int | None = None  # auto: `cores`
    interop_threads: int = 1
    pinning: str = "compact"
    allocator: str = "default"
    blas: str | None = None  # the matmul backend; auto: the framework's first in FRAMEWORK_SUPPORT (out of the key)
    omp_proc_bind: str | None = None  # OMP_PROC_BIND; auto: close/spread from `pinning` (false when pinning=none)
    omp_places: str | None = None  # OMP_PLACES; auto: one place per chosen CPU when pinned
    omp_wait: str | None = None  # OMP_WAIT_POLICY; auto: the runtime's
    gomp_spincount: int | None = None  # GOMP_SPINCOUNT (libgomp's spin before sleeping); auto: the runtime's
    smt: str = "cores"  # with SMT: threads on whole physical cores, or on sibling pairs (siblings)
    numa: str | None = None  # memory binding: local, interleave, or a node id; auto: the kernel's (local)
    # hardware (None: leave the machine as it is)
    cores: int | None = None  # auto: threads when pinned, every core the trial may use when pinning=none
    core_list: str | None = None  # explicit CPU ids, e.g. "0,2" or "0-3": overrides the pinning order
    freq_ghz: float | None = None  # pins scaling_min_freq = scaling_max_freq (needs cpufreq and root)
    governor: str | None = None
    turbo: bool | None = None
    isa: str | None = None  # cap the vector ISA the libraries may use (sse42, avx2, avx512, avx512_bf16, amx)
    # timing protocol
    warmup_steps: int | None = None  # auto: 2 eager, 3 compiled
    measure_steps: int | None = None  # auto: 10
    measure_seconds: float | None = None  # auto: 60 s budget, whichever of steps/seconds ends first
    # running and keeping
    timeout_s: float = 600.0
    memory_cap_mb: int | None = None  # auto: 90% of the node's memory
    save_model: bool = False

    # ---- derived values -------------------------------------------------
    @property
    def attn_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def mlp_hidden(self) -> int:
        return int(round(self.mlp_ratio * self.width))

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len * self.grad_accum

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> TrialConfig:
        return dataclasses.replace(self, **changes)

    def config_key(self) -> str:
        """Stable hash of what the trial measures (autos that depend on the node stay 'auto')."""
        # None (auto / leave alone) is left out, so adding an optional axis later keeps old keys valid
        ident = {k: v for k, v in self.to_dict().items() if k not in NOT_IN_KEY and v is not None}
        if self.blas == default_blas(self.framework):  # the key the config had before blas was an axis
            ident.pop("blas", None)
        for key, default in KEY_DEFAULTS.items():
            if ident.get(key) == default:
                ident.pop(key)
        ident.pop("model", None)  # a label: the keys it expanded to are in the key
        blob = json.dumps(ident, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


FIELD_TYPES = {f.name: f.type for f in fields(TrialConfig)}


def field_kind(key: str) -> str:
    """'int', 'float', 'str' or 'bool': a config key's type, whether or not it may be None (auto)."""
    return FIELD_TYPES[key].replace(" | None", "")


def is_numeric_key(key: str) -> bool:
    return key in FIELD_TYPES and field_kind(key) in ("int", "float")


def _coerce(key: str, raw):
    """Turn a command-line or YAML value into the field's type, or raise ConfigError."""
    kind = field_kind(key)
    optional = kind != FIELD_TYPES[key]
    text = raw.lower() if isinstance(raw, str) else None
    if raw is None or text == "auto" or (optional and text in ("none", "")):
        if optional:
            return None
        raise ConfigError(f"{key}: 'auto' is not allowed here; give a {kind}")
    try:
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind == "int":
            if isinstance(raw, bool):
                raise ValueError
            value = float(raw)
            if not value.is_integer():
                raise ValueError
            return int(value)
        if kind == "float":
            if isinstance(raw, bool):
                raise ValueError
            return float(raw)
        if isinstance(raw, bool):  # YAML 1.1 reads on/off and false/true unquoted as booleans
            spelled = {True: "on", False: "off"} if "on" in CHOICES.get(key, ()) else {True: "true", False: "false"}
            return spelled[raw]
        return str(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={raw!r} is not a valid {kind}") from None


def build_config(values: dict) -> TrialConfig:
    """Build and validate a config from a mapping of canonical keys (unknown keys are an error)."""
    unknown = sorted(set(values) - set(FIELD_TYPES))
    if unknown:
        known = ", ".join(FIELD_TYPES)
        raise ConfigError(f"unknown key {unknown[0]!r} (known keys: {known})")
    coerced = {k: _coerce(k, v) for k, v in values.items()}
    preset = coerced.get("model")
    if preset is not None:
        if preset not in MODEL_PRESETS:
            raise ConfigError(f"unknown model preset {preset!r} ({', '.join(MODEL_PRESETS)})")
        coerced = MODEL_PRESETS[preset] | coerced  # keys given beside the preset override it
    return validate(TrialConfig(**coerced))


def parse_assignments(items: list[str]) -> dict:
    """['width=512', 'attention=local'] -> {'width': '512', 'attention': 'local'}."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def format_assignments(values: dict) -> str:
    """{'width': 512, 'attention': 'local'} -> 'width=512 attention=local': the inverse of parse_assignments,
    and how a plan point is labelled everywhere."""
    return " ".join(f"{k}={v}" for k, v in values.items())


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


def default_blas(framework: str) -> str | None:
    """The backend a framework runs without being asked (None for one registered through BENCH_TRAINERS)."""
    support = FRAMEWORK_SUPPORT.get(framework)
    return support["blas"][0] if support else None


def _resolve_framework_autos(cfg: TrialConfig) -> TrialConfig:
    """compile and attn_backend: None -> the framework's first supported value (torch's for a registered one);
    blas: None -> the framework's default backend, which config_key leaves out (as asked; blas_used: as it ran)."""
    support = FRAMEWORK_SUPPORT.get(cfg.framework, FRAMEWORK_SUPPORT["torch"])
    autos = {key: support[key][0] for key in ("compile", "attn_backend") if getattr(cfg, key) is None}
    if cfg.blas is None and cfg.framework in FRAMEWORK_SUPPORT:
        autos["blas"] = default_blas(cfg.framework)
    return cfg.replace(**autos) if autos else cfg


def _check_framework_support(cfg: TrialConfig) -> None:
    support = FRAMEWORK_SUPPORT.get(cfg.framework)
    if support is None:
        return
    for key, values in support.items():
        value = getattr(cfg, key)
        if value is not None and value not in values:
            raise ConfigError(
                f"{key}={value!r} cannot run with framework={cfg.framework!r} (it supports {key} {', '.join(values)})"
            )
    if cfg.framework != "torch":
        for key, value in TORCH_ONLY.items():
            if getattr(cfg, key) != value:
                raise ConfigError(
                    f"{key}={getattr(cfg, key)!r} is applied only by framework='torch'; framework={cfg.framework!r} "
                    f"needs {key}={value if value is not None else 'auto'}"
                )


def _check_range(key: str, value, low, high=math.inf) -> None:
    if not (low <= value <= high):
        bound = f">= {low}" if high == math.inf else f"in [{low}, {high}]"
        raise ConfigError(f"{key}={value} must be {bound}")


def validate(cfg: TrialConfig) -> TrialConfig:
    """Check every knob and resolve model-level autos; returns the resolved config."""
    _check_choice(cfg, "framework")
    cfg = _resolve_framework_autos(cfg)
    for key in CHOICES:
        _check_choice(cfg, key)
    _check_framework_support(cfg)
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

    if cfg.fused_linear_act and cfg.precision in ("q8", "q4", "bitnet"):
        raise ConfigError(
            f"fused_linear_act=True cannot run with precision={cfg.precision!r}: the fused oneDNN kernel would bypass "
            "the fake-quantised Linear (use fp32, bf16 or mixed)"
        )
    if cfg.precision == "q4":  # torchao's int4 weights come in groups of 32 along each Linear's input
        inputs = {"width": cfg.width, "heads × head_dim": cfg.heads * head_dim, "the MLP hidden": cfg.mlp_hidden}
        odd = [f"{name} {size}" for name, size in inputs.items() if size % 32]
        if odd:
            raise ConfigError(
                f"precision='q4' quantises weights in groups of 32 input features: {', '.join(odd)} "
                "must be multiples of 32"
            )
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
    jit_cache = _check_compile_keys(cfg)
    _check_system_keys(cfg)
    if cfg.dataset_tokens is not None:  # a batch row is a window of seq_len + 1 tokens, at one of >= 1 offsets
        _check_range("dataset_tokens", cfg.dataset_tokens, cfg.seq_len + 2)

    dataset = cfg.dataset
    if dataset is None:
        from trainables.dataset import resolve_auto_dataset  # imports numpy: only when there is an auto to resolve

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


def _check_compile_keys(cfg: TrialConfig) -> str | None:
    """The compiler keys against `compile`; returns jit_cache resolved (cold for a compiled trial, None for eager)."""
    if cfg.fusion == "off" and cfg.compile not in FUSING_COMPILES:
        raise ConfigError(
            f"fusion='off' needs a compiler with fusion passes (compile {', '.join(FUSING_COMPILES)}); "
            f"compile={cfg.compile!r} fuses nothing"
        )
    for key in ("cxx", "cxx_opt", "march", "simdlen"):
        if getattr(cfg, key) is not None and cfg.compile not in INDUCTOR_COMPILES:
            raise ConfigError(
                f"{key}={getattr(cfg, key)!r} sets how Inductor builds its generated C++ code: it needs compile "
                f"{' or '.join(INDUCTOR_COMPILES)}, not {cfg.compile!r}"
            )
    if cfg.simdlen is not None and cfg.simdlen not in SIMDLENS:
        raise ConfigError(f"simdlen={cfg.simdlen} must be one of {', '.join(map(str, SIMDLENS))} (bits; 0: scalar)")
    if cfg.compile == "eager":
        if cfg.jit_cache is not None:
            raise ConfigError(f"jit_cache={cfg.jit_cache!r} needs a compiled trial: compile='eager' caches nothing")
        return None
    if cfg.jit_cache == "warm" and cfg.compile == "aot_eager":
        raise ConfigError(
            "jit_cache='warm' cannot run with compile='aot_eager': torch 2.13 keeps no compiled graph of aot_eager "
            "between processes (AOTAutograd caches only Inductor's), so there is no cache to warm"
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
