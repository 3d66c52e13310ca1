"""The worker process of one trial: pin, load, train, measure, write one JSON result. Nothing else.

    python -m trainables.worker PAYLOAD.json RESULT.json

Affinity is applied before the framework is imported, so OpenMP's thread pool starts on the chosen cores. Everything
framework-specific goes through the trainer the registry names for the config's `framework` (trainables/trainer.py):
this module imports no framework.
"""

from __future__ import annotations

import os
import sys
import time

_IMPORT_STARTED = time.time()
# a forked worker (trainables/preload_server.py): the mask its main thread had once the libraries loaded in the fork
# server (libgomp binds it to the first place as it loads), set again after this worker sets the trial's CPUs
_LOADED_MAIN_THREAD_MASK: list[int] | None = None

import contextlib  # noqa: E402
import json  # noqa: E402 - after the clock above: the worker's own start-up is part of what it reports
import platform  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402


def main(argv: list[str]) -> int:
    from hwctl.files import atomic_write_text

    payload_path, result_path = Path(argv[0]), Path(argv[1])
    payload = json.loads(payload_path.read_text())
    die_with_parent(payload["parent_pid"])
    if payload["cpus"] is not None:
        os.sched_setaffinity(0, payload["cpus"])
    # read back before OpenMP starts: libgomp then binds each thread (the main one too) to one place
    process_affinity = ",".join(map(str, sorted(os.sched_getaffinity(0))))
    try:
        result = run(payload) | {"status": "ok", "error": None, "affinity_read_back": process_affinity}
    except Exception as exc:  # a trial that fails is a result, not a crash of the sweep
        result = {
            "status": "failed",
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc()[-4000:],
        }
    atomic_write_text(result_path, json.dumps(result, default=float))
    return 0 if result["status"] == "ok" else 1


def _loaded_libraries(names: tuple[str, ...]) -> list[str]:
    maps = Path("/proc/self/maps").read_text()
    return sorted({line.split()[-1] for line in maps.splitlines() if any(n in line for n in names)})


def _thread_affinities() -> str:
    """The CPUs each thread of this process may run on, e.g. '0;1' for two threads pinned to cores 0 and 1."""
    masks = []
    for status in sorted(Path("/proc/self/task").glob("*/status")):
        for line in status.read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                masks.append(line.split(":", 1)[1].strip())
    return ";".join(sorted(set(masks)))


def read_thread_pools() -> dict[str, int]:
    """Every thread pool of this process and its size, read back: threadpoolctl's (openmp, mkl, openblas, ...; by
    internal_api, the largest where a library is loaded twice) and XLA's CPU pool, which sizes itself from the
    process's CPU affinity and is seen only as threads named tf_XLAEigen."""
    import threadpoolctl

    pools: dict[str, int] = {}
    for pool in threadpoolctl.threadpool_info():
        name = pool["internal_api"]
        pools[name] = max(pools.get(name, 0), pool["num_threads"])
    names = [path.read_text().strip() for path in Path("/proc/self/task").glob("*/comm")]
    xla = sum(name.startswith("tf_XLAEigen") for name in names)
    return pools | ({"xla_eigen": xla} if xla else {})


def run(payload: dict) -> dict:
    started = time.time()
    from hwctl.machine_efficiency import machine_efficiency_columns
    from hwctl.numa import read_numa_placement
    from hwctl.telemetry import CpuContention, EnergyCounter, FrequencyProbe, Probes
    from trainables.dataset import prepare_tokens
    from trainables.timing import measure

    # the trial's CPUs: read before OpenMP narrows the main thread's mask to its first place
    cpus = sorted(os.sched_getaffinity(0))
    os.environ["BENCH_TRIAL_CPUS"] = ",".join(map(str, cpus))  # the peak cache's key names them (hwctl/microbench.py)
    cfg, trainer_class = load_framework(payload["config"])
    if _LOADED_MAIN_THREAD_MASK is not None:  # what loading the framework did to a fresh worker's main thread
        os.sched_setaffinity(0, _LOADED_MAIN_THREAD_MASK)
    import_s = time.time() - started
    # libgomp printed its settings as the framework loaded (the parent's omp_runtime): child processes (Inductor's
    # compile workers) need not print them again
    os.environ.pop("OMP_DISPLAY_ENV", None)

    data_dir = Path(payload["data_dir"])
    (corpus, data_meta), data_s = _timed(prepare_tokens, cfg.dataset, cfg.vocab_size, data_dir)
    tokens, data_meta = training_data(corpus, data_meta, cfg.dataset_tokens)
    (trainer, batches), build_s = _timed(build_trainer, trainer_class, cfg, tokens)

    first_step_at = time.time()
    timing = measure(
        trainer,
        batches,
        probe=Probes(
            [
                EnergyCounter(Path(payload["sysfs_root"])),
                FrequencyProbe(cpus, Path(payload["sysfs_root"])),
                CpuContention(cpus),
            ]
        ),
        grad_accum=cfg.grad_accum,
        warmup_steps=cfg.warmup_steps,
        measure_steps=cfg.measure_steps,
        measure_seconds=cfg.measure_seconds,
    )
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    thread_affinity = _thread_affinities()
    thread_pools = read_thread_pools()
    # the pages the model, optimizer state and batches touched, and the policy they follow (numa); the nice value
    # the launcher left the worker at, which its threads inherited
    numa_placement = read_numa_placement()
    worker_nice = os.getpriority(os.PRIO_PROCESS, 0)
    # after the timed region; on a cache miss measured here, under the trial's own CPUs, threads, allocator and ISA cap
    peak, peak_s = _timed(trainer.matmul_peak, cfg.threads, data_dir / "hw")
    derived = derived_metrics(cfg, timing, trainer.params, peak)
    # beside mfu: the machine's best matmul over every installed library, and the CPU's theoretical peak
    machine, machine_peak_s = _timed(
        machine_efficiency_columns,
        derived["achieved_gflops"],
        derived["peak_dtype"],
        cfg.threads or len(cpus),
        cpus,
        data_dir / "hw",
        Path(payload["sysfs_root"]),
        payload.get("fingerprint_id"),
    )
    roofline, roofline_s = _timed(
        roofline_columns,
        cfg,
        trainer,
        timing,
        derived["peak_gflops"],
        cpus,
        data_dir / "hw",
        payload.get("fingerprint_id"),
    )
    result = (
        timing
        | data_meta
        | derived
        | machine
        | roofline
        | {
            "peak_rss_mb": peak_rss_mb,
            "startup_s": first_step_at - payload["spawned_at"],
            "interpreter_start_s": _IMPORT_STARTED - payload["spawned_at"],
            "import_s": import_s,
            "data_s": data_s,
            "build_s": build_s,
            "peak_s": peak_s,
            "machine_peak_s": machine_peak_s,
            "roofline_s": roofline_s,
            "thread_affinity": thread_affinity,
            "thread_pools": thread_pools,
            "worker_nice": worker_nice,
        }
        | numa_placement
        | trainer.facts()
        | {
            "allocator_loaded": ",".join(_loaded_libraries(("jemalloc", "tcmalloc"))) or "glibc",
            "python_version": platform.python_version(),
        }
    )
    if cfg.save_model:
        result["model_dir"] = save_model(trainer, cfg, payload["config_key"], Path(payload["output_dir"]))
    return result


def _timed(function, *args):
    """(function(*args), seconds it took)."""
    started = time.time()
    value = function(*args)
    return value, time.time() - started


def load_framework(config: dict):
    """The trial's config and its trainer class, threads set before the framework starts its thread pools."""
    from trainables.config import TrialConfig
    from trainables.trainer import load_trainer

    cfg = TrialConfig(**config)
    trainer_class = load_trainer(cfg.framework)  # imports the framework: most of the worker's start-up
    trainer_class.configure_threads(cfg.threads, cfg.interop_threads)
    return cfg, trainer_class


def training_data(corpus, data_meta: dict, dataset_tokens: int | None) -> tuple:
    """The tokens the batches are drawn from (the first dataset_tokens of the corpus, or all of it) and the row's
    description of them: dataset_tokens as used, the corpus size beside it, and their footprint."""
    meta = {k: v for k, v in data_meta.items() if k != "dataset_tokens"}  # token caches from before the key
    if dataset_tokens is not None and dataset_tokens > corpus.size:
        raise ValueError(
            f"dataset_tokens={dataset_tokens} exceeds the {corpus.size} tokens of dataset {meta.get('dataset')!r} "
            "at this vocab_size"
        )
    tokens = corpus[:dataset_tokens] if dataset_tokens is not None else corpus
    return tokens, meta | {
        "corpus_tokens": int(corpus.size),
        "dataset_tokens": int(tokens.size),
        "data_bytes": int(tokens.nbytes),
    }


def build_trainer(trainer_class, cfg, tokens) -> tuple:
    """The trainer and the micro-batches the timed steps reuse cyclically."""
    trainer = trainer_class(cfg)
    batch_count = min((1 + cfg.warmup_steps + cfg.measure_steps) * cfg.grad_accum, 64)
    return trainer, trainer.make_batches(tokens, batch_count)


def derived_metrics(cfg, timing: dict, params: int, peak: dict) -> dict:
    """What the step times mean: FLOP rate, MFU against the framework's own matmul peak, throughput, projections."""
    from hwctl.isa import bf16_native_reason
    from trainables.flops import flops_method, flops_per_step

    flops = flops_per_step(cfg)
    median = timing["step_time_median_s"]
    achieved = flops / median / 1e9
    energy = timing["energy_j"]
    # a trainer that measures only an fp32 peak (tests/fake_trainer.py) is divided by it
    peak_gflops = peak.get("peak_gflops", peak["peak_gflops_fp32"])
    return {
        "params": params,
        "flops_per_step": flops,
        "flops_method": flops_method(cfg),
        "achieved_gflops": achieved,
        "mfu": achieved / peak_gflops,
        "peak_gflops": peak_gflops,
        "peak_dtype": peak.get("peak_dtype", "fp32"),
        "peak_gflops_fp32": peak["peak_gflops_fp32"],
        "bf16_native": bf16_native_reason(cfg.isa) is None,
        "matmul_library": peak.get("matmul_library", "unknown"),
        "peak_method": peak["peak_method"],
        "peak_cached": peak["peak_cached"],
        "tokens_per_s": cfg.tokens_per_step / median,
        "energy_per_step_j": energy / timing["measure_steps_run"] if energy is not None else None,
        "projected_10k_steps_s": 10_000 * median,
        # the first step's excess over a warm step: Inductor's compile time, or eager's cold start
        "compile_s": max(timing["time_to_first_step_s"] - median, 0.0),
    }


def roofline_columns(cfg, trainer, timing: dict, peak_gflops: float, cpus: list[int], cache_dir: Path, fingerprint_id):
    """The trial under its roofline (trainables/roofline.py), at the triad bandwidth of its threads and CPUs."""
    from trainables.roofline import PHASES, roofline_values

    try:
        bandwidth = trainer.memory_bandwidth(cfg.threads or len(cpus), cpus, cache_dir, fingerprint_id)
    except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as exc:  # a trial that trained stays ok
        return {"roofline_bandwidth_method": f"not measured: {type(exc).__name__}: {str(exc)[-300:]}"}
    phases = {phase: timing[f"{phase}_s"] for phase in PHASES}
    values = roofline_values(cfg, timing["step_time_median_s"], phases, peak_gflops, bandwidth["bandwidth_gbs"])
    return values | {
        "roofline_bandwidth_cached": bandwidth["bandwidth_cached"],
        "roofline_bandwidth_method": bandwidth["bandwidth_method"],
    }


def save_model(trainer, cfg, config_key: str, output_dir: Path) -> str:
    """output_dir/config_key/: the trainer's weights (torch: model.safetensors) and config.json."""
    target = output_dir / config_key
    target.mkdir(parents=True, exist_ok=True)
    trainer.save(target)
    (target / "config.json").write_text(
        json.dumps(cfg.to_dict() | {"config_key": config_key, "params": trainer.params}, indent=1)
    )
    return str(target)


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL this worker if its parent dies (a killed Ray actor or driver), so no
    orphan keeps training on cores the next trial was promised."""
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    # skip interpreter teardown: with torch loaded it takes ~0.8 s (measured) and the result is written
    os._exit(code)
