"""One dataclass for every knob of a trial, and the key that identifies what it measures.

Field names are the canonical keys of ../shared/MISSION.md: the same names are used on the command line
(`bench.py trial width=512`), in plan files and as Parquet columns (their values: trainables/keys.py).
`None` means "auto": model-level autos (head_dim, kv_heads, timing protocol) and the framework's autos (its declared
first values) are resolved by validation (trainables/validation.py), machine-level autos (threads) by the worker's
launcher on the node that runs it, so one config means "all cores" on every host. `dataset` is the exception: its
auto is resolved by validation (on the node that expands the plan) into the dataset actually used, because a run on
the hub's data and a run on the offline corpus must not share a config_key (trainables/dataset.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, fields

from trainables.keys import KEY_DEFAULTS, NOT_IN_KEY
from trainables.trainer import DEFAULT_FRAMEWORK, framework_names, framework_support


@dataclass(frozen=True)
class TrialConfig:
    framework: str = DEFAULT_FRAMEWORK  # the registry's first (trainables/trainer.py)
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
    attn_backend: str | None = None  # auto: the framework's first (as for compile and blas)
    vocab_size: int = 8192
    # training
    seq_len: int = 256
    batch_size: int = 1
    grad_accum: int = 1
    precision: str = "fp32"
    compile: str | None = None  # auto: the first its framework declares (trainables/<name>_backend/support.py)
    fusion: str = "on"  # off: the compiler's fusion passes turned off (compiled trials only)
    jit_cache: str | None = None  # cold: an empty compile cache; warm: one primed by a run in another process
    cxx: str | None = None  # the C++ compiler of a compile that generates C++ code; auto: its own (g++ or $CXX)
    cxx_opt: str | None = None  # optimisation level of the generated C++ code; auto: the code generator's (O3)
    march: str | None = None  # -march of the generated C++ code; auto: the code generator's (native)
    simdlen: int | None = None  # vector width of the generated code in bits (0: scalar); auto: the widest the CPU has
    optimizer: str = "adamw"  # lookahead: Lookahead (k=5, alpha=0.5) around AdamW
    fused_linear_act: bool = False  # the MLP's up-projection and activation as one fused kernel
    freeze_layers: int = 0  # the first N transformer blocks get no gradient and no optimizer state
    model: str | None = None  # a preset of keys.MODEL_PRESETS, expanded by build_config; a label in the row
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
    blas: str | None = None  # the matmul backend; auto: the framework's first (left out of the key)
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


def default_blas(framework: str) -> str | None:
    """The backend a framework runs without being asked (None where it declares none)."""
    return framework_support(framework).auto("blas") if framework in framework_names() else None


def field_kind(key: str) -> str:
    """'int', 'float', 'str' or 'bool': a config key's type, whether or not it may be None (auto)."""
    return FIELD_TYPES[key].replace(" | None", "")


def is_numeric_key(key: str) -> bool:
    return key in FIELD_TYPES and field_kind(key) in ("int", "float")
