"""The result row: every column once (type, unit, kind, one-line meaning), and the columns every row starts with.

In the manner of pyperf's `_metadata.py`: the worker's row, the store's Parquet types, `bench.py trial`'s
summary, `bench.py compare`'s recorded-variables table, `bench.py columns` and the README's column tables all
read this registry; a test fails when a row carries a column it lacks. Adding a metric is one entry here.

Kinds:
- config:   a key of the trial config (trainables/config.py), as resolved for the trial
- metric:   measured by the trial, with its method recorded beside it where there is a choice of method
- recorded: read, not set: the host, its hardware and software, the environment the worker ran in
- run:      bookkeeping: which sweep, study and node, the status and timestamps

Columns that only one framework fills (torch_threads, xla_flags, numpy_version ...) are named here all the same: an
entry is data about a row, not code that reaches the framework (tests/test_import_rules.py exempts this registry from
the line limit for the same reason).
"""

from __future__ import annotations

import socket
from dataclasses import MISSING, dataclass, fields
from datetime import UTC, datetime

from trainables.keys import CHOICES, NOT_SUPPORTED_YET
from trainables.trial_config import TrialConfig, field_kind

KINDS = ("config", "metric", "recorded", "run")
TYPES = ("int", "float", "str", "bool", "float_list", "json")  # json: a JSON object stored as text


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    kind: str
    meaning: str
    unit: str = ""
    summary: str | None = None  # format of the value in `bench.py trial`'s summary; None: not shown there
    compare: str | None = None  # its label in `bench.py compare`'s recorded table; None: not shown there


def _config(name: str, meaning: str, unit: str = "", summary: str | None = None) -> Column:
    return Column(name, field_kind(name), "config", meaning, unit, summary)


def _metric(name: str, type_: str, meaning: str, unit: str = "", summary: str | None = None) -> Column:
    return Column(name, type_, "metric", meaning, unit, summary)


def _recorded(
    name: str, type_: str, meaning: str, unit: str = "", compare: str | None = None, summary: str | None = None
) -> Column:
    return Column(name, type_, "recorded", meaning, unit, summary, compare)


def _run(name: str, type_: str, meaning: str, unit: str = "", summary: str | None = None) -> Column:
    return Column(name, type_, "run", meaning, unit, summary)


_STEP_STATS = {"median": "median", "mean": "mean", "std": "standard deviation", "min": "fastest", "max": "slowest"}
_PHASES = {
    "forward": "forward pass (loss included)",
    "backward": "backward pass",
    "optimizer": "optimizer update and zeroing of gradients",
}


def _phase_roofline_columns(phase: str) -> list[Column]:
    """One phase's roofline (trainables/roofline.py): its bytes, intensity, roof, fraction and binding roof. The
    optimizer's FLOPs are element-wise (not counted), so its fraction is a share of the bandwidth, not of the roof."""
    work = {"forward": "the forward pass", "backward": "the backward pass", "optimizer": "the optimizer step"}[phase]
    intensity = f"{work}'s matmul FLOPs / {phase}_roofline_bytes"
    fraction = f"{work}'s FLOPs / {phase}_s / {phase}_roofline_gflops"
    if phase == "optimizer":
        intensity += " (0: its FLOPs are element-wise, not counted)"
        fraction = (
            "optimizer_roofline_bytes / optimizer_s / roofline_bandwidth_gbs: the share of the triad bandwidth it moved"
        )
    return [
        _metric(
            f"{phase}_roofline_bytes", "float", f"{work}'s share of roofline_bytes; None where phases are fused", "B"
        ),
        _metric(f"{phase}_arithmetic_intensity", "float", intensity, "FLOP/B"),
        _metric(f"{phase}_roofline_gflops", "float", f"the roof at {phase}_arithmetic_intensity", "GFLOP/s"),
        _metric(f"{phase}_roofline_fraction", "float", fraction),
        _metric(f"{phase}_roofline_bound", "str", f"compute or memory, at {phase}_arithmetic_intensity"),
    ]


CONFIG_COLUMNS = [
    _config(
        "framework", "the training framework: torch, jax (jax.jit + optax), numpy (hand-written backward and AdamW)"
    ),
    _config("depth", "transformer layers"),
    _config("width", "hidden size d_model"),
    _config("heads", "query heads"),
    _config("head_dim", "per-head dim; attention inner dim = heads × head_dim may differ from width"),
    _config("kv_heads", "key/value heads (GQA; 1 = MQA), must divide heads"),
    _config("mlp_ratio", "MLP hidden = mlp_ratio × width"),
    _config("dropout", "dropout probability"),
    _config("activation", "MLP activation"),
    _config(
        "attention",
        "full (causal), local (causal blocks of `window` tokens), sliding (each token sees the last `window`)",
    ),
    _config("window", "window of local/sliding attention", "tokens"),
    _config(
        "attn_backend",
        "manual (matmul + softmax) or sdpa (torch `scaled_dot_product_attention`, `jax.nn.dot_product_attention`); "
        "auto: sdpa, manual for numpy",
    ),
    _config("vocab_size", "vocabulary of the tokenizer trained on the corpus", "tokens"),
    _config("seq_len", "tokens per sequence", "tokens"),
    _config("batch_size", "sequences per micro-batch"),
    _config("grad_accum", "micro-batches per optimizer step"),
    _config(
        "precision",
        "fp32, bf16 (weights and compute), mixed (bf16 autocast, fp32 master weights), q8 / q4 / bitnet "
        "(quantisation-aware training with torchao: fake-quantised weights and activations, fp32 master weights)",
    ),
    _config(
        "compile",
        "torch: eager, inductor (`torch.compile`), inductor-max-autotune (mode='max-autotune'), aot_eager (graph "
        "capture and AOTAutograd, no code generation); jax: jit (`jax.jit` over the whole step) or eager (op by op); "
        "numpy: eager; auto: eager, jit for jax",
    ),
    _config(
        "fusion",
        "on, or off: the compiler's fusion passes turned off (Inductor settings, XLA's fusion passes disabled); "
        "fused_kernels counts what fused",
    ),
    _config(
        "jit_cache",
        "cold (an empty compile cache) or warm (a cache primed by an earlier run of the same config in another "
        "process); auto: cold for compiled trials, none for eager",
    ),
    _config("cxx", "the C++ compiler of Inductor's generated code (g++, clang++); auto: Inductor's ($CXX or g++)"),
    _config("cxx_opt", "optimisation level of Inductor's generated code (O1, O2, O3); auto: Inductor's O3"),
    _config("march", "-march of Inductor's generated code (native, x86-64, x86-64-v2..v4); auto: Inductor's native"),
    _config(
        "simdlen",
        "Inductor's vector width (0: scalar code, 256, 512); auto: the widest the CPU has, capped by march "
        "(x86-64, v2: 0; v3: 256)",
        "bits",
    ),
    _config(
        "optimizer",
        "adamw (torch fused AdamW), sgd (momentum 0.9), lamb, lookahead (Lookahead k=5 alpha=0.5 around AdamW); "
        "lamb and lookahead from pytorch-optimizer",
    ),
    _config("fused_linear_act", "the MLP's up-projection and activation as one oneDNN kernel (eltwise post-op)"),
    _config("freeze_layers", "the first N transformer blocks get no gradient and no optimizer state"),
    _config(
        "model",
        "preset: small (768/12/12), medium (1024/24/16), large (1280/36/20), xl (1600/48/25), 2.7B (2560/32/32) "
        "as width/depth/heads, mlp_ratio 4; keys given beside it win; a label, out of config_key",
    ),
    _config("learning_rate", "the optimizer's learning rate"),
    _config("seed", "seed of the initial weights and of batch sampling"),
    _config(
        "dataset_tokens",
        "tokens of training data the batches are drawn from (the first N of the corpus); auto: the whole corpus, "
        "recorded as its size",
        "tokens",
    ),
    _config(
        "dataset",
        "Hugging Face dataset name, a local .txt/.json/.jsonl/.parquet/.csv file, or offline (the Python docs); "
        "auto: ThomasTheMaker/Arc-Corpus-sample where the node can have it (hub or cache), else offline",
    ),
    _config("threads", "intra-op/OpenMP threads (= cores given to the trial); auto: all cores", summary="{}"),
    _config("interop_threads", "PyTorch inter-op threads"),
    _config("omp_proc_bind", "OMP_PROC_BIND (false, true, close, spread); auto: close/spread from pinning"),
    _config("omp_places", "OMP_PLACES (cores, threads, sockets); auto: one place per chosen CPU when pinned"),
    _config("omp_wait", "OMP_WAIT_POLICY (active, passive); auto: the runtime's"),
    _config("gomp_spincount", "GOMP_SPINCOUNT: libgomp's spins before a waiting thread sleeps; auto: the runtime's"),
    _config("smt", "on an SMT node: threads on whole physical cores (cores) or on sibling pairs (siblings)"),
    _config("numa", "memory binding (local, interleave, a node id) through numactl; auto: the kernel's local"),
    _config(
        "pinning",
        "none, compact (physical cores of one socket first, SMT siblings last), spread (round-robin over sockets)",
    ),
    _config("allocator", "default (glibc), jemalloc, tcmalloc (LD_PRELOAD; `unsupported` if not installed)"),
    _config(
        "blas",
        "matmul backend: torch mkl, onednn-fp32 (oneDNN inner product, strict fp32), onednn-bf16math "
        "(fp32_precision=bf16 routing); jax eigen, ynnpack, onednn (XLA_FLAGS); numpy openblas; auto: the first of "
        "each, left out of config_key (blas_used says what ran)",
    ),
    _config("cores", "how many cores the trial gets; auto: threads when pinned, all when pinning=none"),
    _config("core_list", "explicit CPU ids (`0,2`, `0-3`), overriding the pinning order"),
    _config("freq_ghz", "pin scaling_min = scaling_max frequency (needs root and cpufreq); auto: leave as is", "GHz"),
    _config("governor", "cpufreq governor to set (needs root and cpufreq); auto: leave as is"),
    _config("turbo", "turbo/boost on or off (needs root and cpufreq); auto: leave as is"),
    _config(
        "isa",
        "cap the vector ISA the libraries may use (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA, MKL_ENABLE_INSTRUCTIONS)",
    ),
    _config("warmup_steps", "steps run after the cold first step and before measuring; auto: 2 eager, 3 compiled"),
    _config("measure_steps", "measured steps (at most)"),
    _config("measure_seconds", "measuring also stops here, after at least 3 steps", "s"),
    _config("timeout_s", "the trial is killed past this wall time", "s"),
    _config("memory_cap_mb", "the trial is killed past this resident memory; auto: 90% of the node's", "MB"),
    _config("save_model", "write output/<config_key>/model.safetensors and config.json"),
]

METRIC_COLUMNS = [
    _metric("params", "int", "parameter count (tied embeddings counted once)", summary="{:,}"),
    *(
        _metric(
            f"step_time_{stat}_s",
            "float",
            f"{meaning} optimizer-step time over the measured steps after warm-up"
            + ("; NaN for one step" if stat == "std" else ""),
            "s",
            "{:.4f} s" if stat == "median" else None,
        )
        for stat, meaning in _STEP_STATS.items()
    ),
    _metric("step_time_cv", "float", "step_time_std_s / step_time_mean_s; NaN for one step", summary="{:.1%}"),
    _metric("step_times_s", "float_list", "every measured step's time", "s"),
    *(
        _metric(f"{phase}_s", "float", f"mean per step of the {meaning}", "s", "{:.4f} s")
        for phase, meaning in _PHASES.items()
    ),
    *(
        _metric(f"{phase}_std_s", "float", f"standard deviation per step of the {phase} phase; NaN for one step", "s")
        for phase in _PHASES
    ),
    _metric(
        "phase_split",
        "str",
        "whether forward_s, backward_s and optimizer_s were timed apart, or why they are None (a fused step)",
    ),
    _metric("time_to_first_step_s", "float", "the cold first step", "s", "{:.3f} s"),
    _metric(
        "compile_s",
        "float",
        "first step − warm median: Inductor's compile time, or eager's cold start",
        "s",
        "{:.3f} s",
    ),
    _metric("warmup_steps_run", "int", "warm-up steps run"),
    _metric("measure_steps_run", "int", "measured steps run"),
    _metric("measured_region_s", "float", "sum of the measured steps", "s"),
    _metric("timed_region_s", "float", "sum of the cold, warm-up and measured steps", "s"),
    _metric("timing_method", "str", "how the steps were timed"),
    _metric("stop_reason", "str", "what ended the measurement: measure_steps, or measure_seconds (after 3 steps)"),
    _metric("tokens_per_s", "float", "batch_size × seq_len × grad_accum / median step time", "tokens/s", "{:,.0f}"),
    _metric(
        "flops_per_step",
        "int",
        "matmul FLOPs the kernels execute in one optimizer step, counted analytically (trainables/flops.py)",
        "FLOP",
        "{:.3e}",
    ),
    _metric("flops_method", "str", "how flops_per_step was counted"),
    _metric("achieved_gflops", "float", "flops_per_step / median step time", "GFLOP/s", "{:.1f}"),
    _metric("mfu", "float", "achieved_gflops / peak_gflops", summary="{:.1%}"),
    _metric(
        "peak_gflops",
        "float",
        "the matmul peak mfu divides by: bf16's for bf16 and mixed rows where bf16_native, fp32's otherwise",
        "GFLOP/s",
        "{:.1f}",
    ),
    _metric("peak_dtype", "str", "which peak peak_gflops is: fp32 or bf16", summary="{}"),
    _metric(
        "peak_gflops_fp32",
        "float",
        "fp32 matmul peak under the trial's CPUs, pinning, threads, allocator and ISA cap (cached in data/hw/)",
        "GFLOP/s",
    ),
    _metric("peak_method", "str", "how the peak was measured, and why fp32's where a bf16 row uses it"),
    _metric(
        "peak_cached",
        "bool",
        "the peaks came from data/hw/: measured earlier in the sweep by a trial under the same conditions",
    ),
    _metric(
        "machine_peak_gflops",
        "float",
        "the machine's best matmul: the fastest of every installed library (torch.mm, oneDNN fp32 IEEE, NumPy's "
        "BLAS, XLA) at the trial's threads, CPUs and peak_dtype (hwctl/machine_peak.py, cached in data/hw/)",
        "GFLOP/s",
        "{:.1f}",
    ),
    _metric("machine_peak_library", "str", "the library that reached machine_peak_gflops", summary="{}"),
    _metric("machine_peak_method", "str", "every library's figure, or why it was skipped, and how the best was timed"),
    _metric("machine_peak_cached", "bool", "machine_peak_gflops came from data/hw/, measured earlier in the sweep"),
    _metric(
        "efficiency_vs_machine_peak",
        "float",
        "achieved_gflops / machine_peak_gflops: unlike mfu, the same divisor for every framework on the node",
        summary="{:.1%}",
    ),
    _metric(
        "theoretical_peak_gflops",
        "float",
        "FMA units × fp32 lanes × 2 × clock (× 2 for AVX512_BF16, AMX's tile rate for AMX) × the physical cores of "
        "the trial's threads, in peak_dtype (hwctl/theoretical_peak.py)",
        "GFLOP/s",
        "{:.1f}",
    ),
    _metric("theoretical_peak_method", "str", "the microarchitecture, each factor, and which clock and where read"),
    _metric(
        "efficiency_vs_theoretical_peak",
        "float",
        "achieved_gflops / theoretical_peak_gflops: above 1 where the cores ran above the recorded clock",
        summary="{:.1%}",
    ),
    _metric(
        "roofline_bytes",
        "float",
        "bytes one optimizer step moves between memory and the cores, modelled from the config: weights, gradients, "
        "optimizer state, activations, attention scores (trainables/traffic.py states every assumption)",
        "B",
    ),
    _metric("arithmetic_intensity", "float", "flops_per_step / roofline_bytes", "FLOP/B", "{:.1f}"),
    _metric(
        "roofline_bandwidth_gbs",
        "float",
        "the triad bandwidth at the trial's threads and CPUs (hwctl/microbench.py, cached in data/hw/)",
        "GB/s",
        "{:.1f}",
    ),
    _metric("roofline_bandwidth_cached", "bool", "roofline_bandwidth_gbs came from data/hw/, measured earlier"),
    _metric("roofline_bandwidth_method", "str", "how the bandwidth was measured, or why it was not"),
    _metric(
        "roofline_gflops",
        "float",
        "the roof at the step's intensity: min(peak_gflops, arithmetic_intensity × roofline_bandwidth_gbs)",
        "GFLOP/s",
        "{:.1f}",
    ),
    _metric(
        "roofline_fraction",
        "float",
        "achieved_gflops / roofline_gflops: above 1 where the step's tensors stay in cache (the model counts every "
        "byte as moving to memory)",
        summary="{:.1%}",
    ),
    _metric("roofline_bound", "str", "which roof binds at the step's intensity: compute or memory", summary="{}"),
    _metric("roofline_method", "str", "how the roof, the FLOPs and the bytes were obtained"),
    *(column for phase in _PHASES for column in _phase_roofline_columns(phase)),
    _metric("peak_rss_mb", "float", "ru_maxrss of the worker after training", "MB", "{:.0f} MB"),
    _metric("loss_first", "float", "loss of the cold first step", summary="{:.3f}"),
    _metric("loss_last", "float", "loss of the last measured step", summary="{:.3f}"),
    _metric("projected_10k_steps_s", "float", "10,000 × median step time", "s", "{:,.0f} s"),
    _metric("energy_j", "float", "RAPL package energy over the measured steps; None where RAPL is unreadable", "J"),
    _metric("energy_per_step_j", "float", "energy_j / measured steps", "J"),
    _metric("energy_method", "str", "how energy was read, or why it is unavailable"),
    _metric(
        "effective_freq_ghz",
        "float",
        "mean scaling_cur_freq of the trial's CPUs, read at the start and the end of the measured steps",
        "GHz",
    ),
    _metric("effective_freq_method", "str", "how the frequency was sampled, or why it is unavailable"),
    _metric(
        "foreign_cpu_s",
        "float",
        "CPU time others (processes, kernel work) took on the trial's CPUs during the measured steps: "
        "their busy time in /proc/stat − worker_cpu_s, at least 0",
        "s",
    ),
    _metric("steal_s", "float", "time the hypervisor gave other guests on the trial's CPUs in the measured steps", "s"),
    _metric("worker_cpu_s", "float", "the worker's own CPU time (all threads, user+system) in the measured steps", "s"),
    _metric("contention_method", "str", "how foreign_cpu_s, steal_s and worker_cpu_s were read, or why unavailable"),
    _metric("startup_s", "float", "worker spawn to the start of the first step", "s", "{:.3f} s"),
    _metric("interpreter_start_s", "float", "worker spawn to the worker's first line", "s"),
    _metric("import_s", "float", "importing the framework in the worker", "s"),
    _metric("data_s", "float", "loading (or building) the token cache in the worker", "s"),
    _metric("build_s", "float", "building the model, optimizer and batches", "s"),
    _metric("peak_s", "float", "the matmul peak after the timed region: measured, or read from the node's cache", "s"),
    _metric("machine_peak_s", "float", "machine_peak_gflops after peak_s: measured, or read from the cache", "s"),
    _metric(
        "roofline_s",
        "float",
        "roofline_bandwidth_gbs after machine_peak_s: measured, or read from the cache (in a child process for "
        "frameworks other than torch, which imports torch there: seconds)",
        "s",
    ),
    _metric("data_build_s", "float", "tokenizer training and tokenization when the cache was built", "s"),
    _metric("wall_s", "float", "the worker process's wall time, seen by the parent", "s"),
    _metric(
        "worker_start",
        "str",
        "how the worker process started: spawned (a fresh `python -m trainables.worker`) or forked (a fresh fork of "
        "the node's fork server, which imported the framework under the same environment, Python and CPU mask: "
        "trainables/preload.py); a forked worker's clock starts at the fork, so its interpreter_start_s is the "
        "launcher's request to the fork and its import_s leaves out the framework import the server paid once",
    ),
    _metric(
        "preload_start_s",
        "float",
        "starting the fork server before this trial, outside wall_s (0: one was running; empty: spawned)",
        "s",
    ),
    _metric(
        "loadavg_before",
        "float",
        "1-minute load average before the worker starts: a busy machine shows here (foreign_cpu_s: during the steps)",
    ),
    _metric("loadavg_after", "float", "1-minute load average after the worker ends (its own threads included)"),
]

RECORDED_COLUMNS = [
    _recorded("host", "str", "hostname of the node that ran the trial"),
    _recorded("node", "str", "the node's IP in the Ray cluster (unique, unlike hostnames)"),
    _recorded("hw_cpu_vendor", "str", "CPU vendor"),
    _recorded("hw_cpu_model", "str", "CPU model name", compare="CPU model"),
    _recorded("hw_arch", "str", "machine architecture", compare="arch"),
    _recorded("hw_logical_cores", "int", "logical CPUs", compare="logical cores"),
    _recorded("hw_physical_cores", "int", "physical cores", compare="physical cores"),
    _recorded("node_cpus", "int", "CPUs the node gave Ray", compare="CPUs given to Ray"),
    _recorded("hw_sockets", "int", "sockets", compare="sockets"),
    _recorded("hw_numa_nodes", "int", "NUMA nodes", compare="NUMA nodes"),
    _recorded("hw_smt", "int", "hardware threads per core", compare="SMT (threads per core)"),
    _recorded("hw_isa", "str", "the vector ISA flags that matter (AVX2/FMA, AVX-512, BF16/VNNI, AMX), comma-separated"),
    _recorded("hw_l1d_kb", "int", "L1 data cache per core", "KB", compare="L1d KB"),
    _recorded("hw_l2_kb", "int", "L2 cache", "KB", compare="L2 KB"),
    _recorded("hw_l3_kb", "int", "L3 cache", "KB", compare="L3 KB"),
    _recorded("hw_memory_gb", "float", "memory", "GiB", compare="memory GiB"),
    _recorded(
        "hw_mem_bw_gbs",
        "float",
        "STREAM-triad bandwidth with all cores, measured on the node before the sweep",
        "GB/s",
        compare="memory bandwidth GB/s (triad, all cores)",
    ),
    _recorded(
        "hw_peak_gflops_fp32",
        "float",
        "all-core fp32 matmul peak, measured on the node before the sweep",
        "GFLOP/s",
        compare="fp32 matmul peak GFLOP/s (all cores)",
    ),
    _recorded("hw_governor", "str", "cpufreq governor (None without cpufreq)", compare="governor"),
    _recorded("hw_turbo", "bool", "turbo/boost state (None where unreadable)", compare="turbo"),
    _recorded("hw_cpufreq_driver", "str", "cpufreq driver (None without cpufreq)"),
    _recorded("hw_rapl", "bool", "RAPL energy counters are readable"),
    _recorded("hw_kernel", "str", "kernel release", compare="kernel"),
    _recorded("hw_fingerprint_id", "str", "hash of the hardware and software fingerprint: peaks are cached per id"),
    _recorded(
        "hw_theoretical_fp32_gflops_per_core",
        "float",
        "FMA units × fp32 lanes × 2 × hw_theoretical_clock_ghz, from cpuinfo's vendor, family, model and flags",
        "GFLOP/s",
        compare="theoretical fp32 GFLOP/s per core",
    ),
    _recorded(
        "hw_theoretical_bf16_gflops_per_core",
        "float",
        "the same for bf16: 2× fp32 with AVX512_BF16, 1024 FLOPs/cycle with AMX_BF16; None without native bf16",
        "GFLOP/s",
    ),
    _recorded("hw_theoretical_clock_ghz", "float", "the clock of the theoretical peaks", "GHz"),
    _recorded(
        "hw_theoretical_clock_source",
        "str",
        "where that clock was read: cpufreq cpuinfo_max_freq, the model name, or cpuinfo's cpu MHz",
    ),
    _recorded("sw_python", "str", "Python version on the node"),
    _recorded("sw_torch", "str", "torch version on the node", compare="torch"),
    _recorded("sw_numpy", "str", "NumPy version on the node"),
    _recorded("sw_ray", "str", "Ray version on the node"),
    _recorded("sw_jax", "str", "JAX version on the node (None when not installed)"),
    _recorded("sw_blas", "str", "BLAS libraries threadpoolctl finds loaded on the node", compare="BLAS"),
    _recorded("affinity", "str", "the CPU list the worker was pinned to (None: not confined)", summary="{}"),
    _recorded(
        "housekeeping_cpus",
        "str",
        "the node's CPUs Ray's own processes were pinned to and no trial used (--housekeeping-cpus; '': none)",
    ),
    _recorded(
        "env",
        "json",
        "numeric-library variables the worker ran with (OMP_*, MKL_*, OPENBLAS_*, LD_PRELOAD, …; BENCH_TRAINERS, BENCH_CPUINFO)",
    ),
    _recorded("affinity_read_back", "str", "the worker's CPU mask, read back before the framework loads"),
    _recorded("thread_affinity", "str", "each thread's CPU mask after training, ';'-separated distinct masks"),
    _recorded("torch_threads", "int", "torch.get_num_threads() in the worker"),
    _recorded("torch_interop_threads", "int", "torch.get_num_interop_threads() in the worker"),
    _recorded("allocator_loaded", "str", "the allocator mapped into the worker (glibc, or the preloaded library)"),
    _recorded("blas_build", "str", "BLAS torch was built with (BLAS_INFO)"),
    _recorded(
        "blas_used",
        "str",
        "the matmul backend that ran, read back: torch from MKL/oneDNN verbose output, jax from the compiled step's "
        "optimized HLO (__ynn_fusion, __onednn_fusion, dot), numpy from threadpoolctl",
        compare="matmul backend",
        summary="{}",
    ),
    _recorded(
        "thread_pools",
        "json",
        "every thread pool's size read back in the worker after training: openmp, mkl, openblas (threadpoolctl), "
        "xla_eigen (threads named tf_XLAEigen)",
        summary="{}",
    ),
    _recorded(
        "blas_detail",
        "str",
        "numpy: the BLAS library NumPy's matmul calls, as threadpoolctl reads it (library, version, architecture, "
        "threading layer, file)",
    ),
    _recorded(
        "xla_dots",
        "json",
        "jax: {backend: number of dot instructions it ran} for the trial's step, counted in optimized HLO",
    ),
    _recorded("xla_dots_source", "str", "jax: where xla_dots was read (the compiled step's HLO, or each eager dot's)"),
    _recorded("jax_backend", "str", "jax.default_backend() in the worker (cpu)"),
    _recorded(
        "xla_flags",
        "str",
        "XLA_FLAGS the jax worker ran with (the backend's flags, trainables/jax_backend/environment.py)",
    ),
    _recorded("jax_version", "str", "jax version in the worker"),
    _recorded("jaxlib_version", "str", "jaxlib version in the worker"),
    _recorded("numpy_version", "str", "NumPy version in the worker"),
    _recorded("torch_cpu_capability", "str", "the vector ISA ATen dispatches to"),
    _recorded(
        "bf16_native",
        "bool",
        "bf16 matmuls run in hardware: the CPU has avx512_bf16, amx_bf16 or avx_ne_convert and the isa cap allows it",
    ),
    _recorded(
        "matmul_library",
        "str",
        "library that ran a Linear of the trial's shape and dtype (MKL/oneDNN verbose output): mkl, onednn, aten",
    ),
    _recorded("torch_version", "str", "torch version in the worker"),
    _recorded(
        "quantization",
        "str",
        "q8/q4/bitnet: what torchao applied (weights, activations, which layers stayed fp32), read back",
    ),
    _recorded("quantization_config", "json", "the torchao config read back field by field, and where it applied"),
    _recorded("quantized_layers", "int", "Linear modules converted for quantisation-aware training (4 per block)"),
    _recorded("quantized_modules", "str", "the class the converted Linears became, read back from the model"),
    _recorded("torchao_version", "str", "torchao version in the worker (quantised precisions)"),
    _recorded("optimizer_class", "str", "the optimizer's class, read back (Lookahead names the one it wraps)"),
    _recorded("optimizer_settings", "json", "the optimizer's hyper-parameters read back from its param_groups"),
    _recorded(
        "optimizer_state_mb",
        "float",
        "bytes of every tensor in the optimizer's state after the steps (Lookahead's slow weights included)",
        "MiB",
    ),
    _recorded(
        "fused_linear_act_kernel",
        "str",
        "fused_linear_act: the oneDNN primitive line of one fused up-projection + activation (ONEDNN_VERBOSE), "
        "its post-op named (attr-post-ops:eltwise_relu / eltwise_gelu_erf / eltwise_swish)",
    ),
    _recorded(
        "onednn_math",
        "str",
        "torch blas=onednn-*: what one training step's oneDNN primitives computed in (ONEDNN_VERBOSE): 'strict' "
        "(no attr-fpmath, every tensor f32) or the fpmath/dtypes seen, their kernels, and the GEMMs MKL ran beside",
    ),
    _recorded("frozen_layers", "json", "the transformer blocks that got no gradient (freeze_layers)"),
    _recorded("frozen_params", "int", "parameter elements without gradient"),
    _recorded("trainable_params", "int", "parameter elements the optimizer updates"),
    # what the compiler keys did, read back (trainables/torch_backend/trainer.py, trainables/jax_backend/trainer.py)
    _metric(
        "fused_kernels",
        "int",
        "generated kernels that compute more than one op of the graph: Inductor's, counted after its scheduler's "
        "fusion; XLA's fusions whose body holds more than one instruction",
    ),
    _metric(
        "generated_kernels",
        "int",
        "kernels the compiler generated, fused or not: Inductor's scheduled kernels (library calls and views not "
        "counted); XLA's instructions that run code outside fusion bodies",
    ),
    _recorded("fusion_settings", "json", "the compiler settings fusion=off applied (Inductor config, XLA flags)"),
    _recorded("jit_cache_dir", "str", "the compile cache the trial ran on (emptied for cold, primed for warm)"),
    _recorded("jit_cache_hits", "int", "compile cache hits in the trial (Inductor FX graph cache; jax cache)"),
    _recorded("jit_cache_misses", "int", "compile cache misses in the trial"),
    _metric("jit_cache_prime_s", "float", "wall time of the run in another process that primed a warm cache", "s"),
    _recorded("cxx_command", "str", "one compile command line Inductor ran on its generated C++ code, as run"),
    _recorded("cxx_version", "str", "the C++ compiler's version line"),
    _recorded("cxx_compiles", "int", "compiler runs that built something (-o) in the trial, not version probes"),
    _recorded("vec_isa", "str", "Inductor's vector ISA and width for its generated code (simdlen as applied)"),
    # how the system keys landed, read back (trainables/launcher.py, hwctl/)
    _recorded("omp_runtime", "json", "the OpenMP settings the runtime reports (OMP_DISPLAY_ENV), where it loaded"),
    _recorded(
        "numa_policy", "str", "the memory policy of the worker's heap, read from /proc/<pid>/numa_maps", summary="{}"
    ),
    _recorded("numa_pages", "json", "the worker's resident pages per NUMA node (numa_maps), near the trial's end"),
    _recorded("physical_cores", "int", "distinct physical cores under the trial's CPUs (smt=siblings: half its CPUs)"),
    _recorded(
        "worker_nice", "int", "the worker's nice value while it ran (Ray starts its workers at 15)", summary="{}"
    ),
    _recorded("python_version", "str", "Python version in the worker"),
    _recorded(
        "hw_settings_applied", "json", "cpufreq/boost files written for this trial and their values ({} when none)"
    ),
    _recorded(
        "dataset_source",
        "str",
        "where the text came from: the hub, the hub cache, or the offline corpus (dataset=offline)",
        summary="{}",
    ),
    _recorded("dataset_documents", "int", "documents in the corpus"),
    _recorded("dataset_chars", "int", "characters in the corpus"),
    _recorded("corpus_tokens", "int", "tokens in the whole tokenized corpus"),
    _recorded("data_bytes", "int", "bytes of the token array the batches are drawn from", "B"),
    _recorded("tokenizer", "str", "the tokenizer trained on the corpus"),
    _recorded("tokenizer_path", "str", "where the tokenizer is cached"),
    _recorded("data_cache_hit", "bool", "the token cache in data/tokens/ was used"),
]

RUN_COLUMNS = [
    _run(
        "status",
        "str",
        "ok, failed (exception, crash signal, memory cap), timeout, unsupported, interrupted (the sweep was stopped "
        "while it ran: a resume measures it again)",
        summary="{}",
    ),
    _run("error", "str", "the reason when not ok", summary="{}"),
    _run("config_key", "str", "stable hash of the config (run-only keys and autos left out)", summary="{}"),
    _run("sweep", "str", "the sweep id (a Parquet partition)"),
    _run("plan", "str", "the plan's name"),
    _run("study", "str", "the plan study the trial belongs to"),
    _run("point", "json", "the keys the study varies, with this trial's values"),
    _run("trial_index", "int", "the trial's place in the plan (None for control and searcher-proposed points)"),
    _run(
        "repeat",
        "int",
        "which measurement of its point this is, from 0 (plan key repeats); for a control point (study control), "
        "which of its node's control points",
    ),
    _run("order_seed", "int", "the seed that shuffled the sweep's order (plan key order_seed)"),
    _run(
        "measure_rule",
        "str",
        "why a budgeted sweep's later round measured this many steps (measure_steps): the Kalibera-Jones optimum from "
        "its node's variance components (sweep/results/measure_length.py); None: the plan's own length",
    ),
    _run(
        "shared_from",
        "str",
        "the identity (node/study/config_key/repeat) of the trial that measured this row, where studies share the same "
        "config and it ran once for all of them; None: this row's own trial. Count measurements WHERE shared_from IS NULL",
    ),
    _run(
        "trial_order",
        "int",
        "the trial's place in its node's order, from 0 (None: recorded, not run); control points included",
    ),
    _run(
        "phase",
        "str",
        "grid, control (the baseline re-measured through the sweep), refine (Optuna where the curve bends), autotune or ab",
    ),
    _run("bend_score", "float", "for refined points: the bend score of the interval that chose the point"),
    _run(
        "reference",
        "json",
        "the figure the study reproduces, from its plan: label (whose figure, on what hardware) and step_time_s, "
        "projected_10k_steps_s, tokens_per_s or mfu",
    ),
    _run("ab_arm", "str", "autotune A/B re-measurement: default or best"),
    _run("ab_round", "int", "autotune A/B round"),
    _run("started_at", "str", "when the parent started the trial (ISO 8601, UTC)"),
    _run("finished_at", "str", "when the trial ended (ISO 8601, UTC)"),
    _run("recorded_at", "str", "when the driver stored the row (ISO 8601, UTC)"),
    _run("exit_code", "int", "the worker's exit code (negative: killed by that signal)"),
    _run("stderr_tail", "str", "the end of the worker's stderr, when not ok"),
    _run("traceback", "str", "the worker's traceback, when it raised"),
    _run("model_dir", "str", "where save_model wrote the weights", summary="{}"),
    _run("schema_version", "int", "version of the stored row layout"),
]

COLUMNS: dict[str, Column] = {c.name: c for c in CONFIG_COLUMNS + METRIC_COLUMNS + RECORDED_COLUMNS + RUN_COLUMNS}

# the order `bench.py trial` prints its summary in: outcome, then what was run, then what was measured
SUMMARY_ORDER = (
    "status",
    "error",
    "config_key",
    "params",
    "threads",
    "affinity",
    "thread_pools",
    "worker_nice",
    "numa_policy",
    "blas_used",
    "step_time_median_s",
    "step_time_cv",
    "forward_s",
    "backward_s",
    "optimizer_s",
    "time_to_first_step_s",
    "compile_s",
    "startup_s",
    "tokens_per_s",
    "flops_per_step",
    "achieved_gflops",
    "peak_gflops",
    "peak_dtype",
    "mfu",
    "machine_peak_gflops",
    "machine_peak_library",
    "efficiency_vs_machine_peak",
    "efficiency_vs_theoretical_peak",
    "arithmetic_intensity",
    "roofline_fraction",
    "roofline_bound",
    "peak_rss_mb",
    "loss_first",
    "loss_last",
    "projected_10k_steps_s",
    "dataset_source",
    "model_dir",
)


def summary_columns() -> list[Column]:
    return [COLUMNS[name] for name in SUMMARY_ORDER]


def compare_columns() -> list[Column]:
    """The recorded variables `bench.py compare` shows per host, in registry order."""
    return [c for c in RECORDED_COLUMNS if c.compare]


def unknown_columns(row: dict) -> list[str]:
    return sorted(set(row) - set(COLUMNS))


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def base_row(cfg: TrialConfig) -> dict:
    """What every row carries, whatever happens to the trial: its config, identity, host and start time."""
    return cfg.to_dict() | {
        "config_key": cfg.config_key(),
        "status": None,
        "error": None,
        "host": socket.gethostname(),
        "started_at": now_iso(),
    }


# ---- the README's tables --------------------------------------------------------------------------
def _default(name: str) -> str:
    field = next(f for f in fields(TrialConfig) if f.name == name)
    return "auto" if field.default is None or field.default is MISSING else str(field.default)


def _values(column: Column) -> str:
    if column.name in CHOICES:
        later = NOT_SUPPORTED_YET.get(column.name, ())
        return ", ".join(CHOICES[column.name]) + (f" ({', '.join(later)}: not yet)" if later else "")
    return column.type


def columns_markdown() -> str:
    """The README's column tables, one per kind: `bench.py columns --markdown` prints them, a test checks the README."""
    parts = []
    for kind in KINDS:
        members = [c for c in COLUMNS.values() if c.kind == kind]
        if kind == "config":
            lines = ["| key | values | default | unit | meaning |", "| --- | --- | --- | --- | --- |"]
            lines += [f"| `{c.name}` | {_values(c)} | {_default(c.name)} | {c.unit} | {c.meaning} |" for c in members]
        else:
            lines = ["| column | type | unit | meaning |", "| --- | --- | --- | --- |"]
            lines += [f"| `{c.name}` | {c.type} | {c.unit} | {c.meaning} |" for c in members]
        parts.append(f"**{kind}** ({len(members)} columns)\n\n" + "\n".join(lines))
    return "\n\n".join(parts)
