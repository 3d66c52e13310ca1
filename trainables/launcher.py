"""The parent side of a trial: build the worker's environment, start it, watch it, never time it.

Threads, OpenMP binding and the allocator must be in place before the framework loads, so each trial is a
fresh `python -m trainables.worker` process whose environment is built here from the config, or, for an eager trial, a
fresh fork of a server that loaded the framework under exactly that environment (trainables/preload.py; the row's
worker_start says which, BENCH_PRELOAD=0 spawns every worker). A
worker that crashes, is killed, runs past its timeout or over its memory cap becomes a result
with status failed/timeout and the reason; nothing here raises because a trial went wrong.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from hwctl.allocator import find_allocator, missing_reason
from hwctl.control import ControlUnavailable, control_unavailable_reason
from hwctl.cores import SYSFS_ROOT, format_cpu_list, parse_cpu_list, physical_cores, select_cpus
from hwctl.isa import isa_environment, isa_unsupported_reason
from hwctl.journal import DEFAULT_JOURNAL, HardwareSettings
from hwctl.numa import numa_command, numa_unsupported_reason
from hwctl.openmp import openmp_environment, parse_display_env, strip_display_env
from hwctl.telemetry import load_average
from trainables import preload
from trainables.columns import base_row, now_iso
from trainables.config import TrialConfig
from trainables.memory import available_memory_bytes, memory_unsupported_reason
from trainables.trainer import framework_support
from trainables.worker_watch import _watch

REPO_ROOT = Path(__file__).resolve().parent.parent
# BENCH_DATA_DIR moves the token and peak caches (the tests point it at a temporary folder: never the user's data/)
DATA_DIR = Path(os.environ.get("BENCH_DATA_DIR") or REPO_ROOT / "data")
OUTPUT_DIR = REPO_ROOT / "output"
WORKER_ARGV = ("-m", "trainables.worker")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# inherited variables that change how the numeric libraries behave: recorded with every result
RECORDED_PREFIXES = (
    "OMP_",
    "GOMP_",
    "KMP_",
    "MKL_",
    "OPENBLAS_",
    "DNNL_",
    "ONEDNN_",
    "ATEN_",
    "TORCH",
    "MALLOC_",
    "LD_PRELOAD",
    "XLA_",
    "JAX_",
    "CXX",  # Inductor's compiler (trainables/torch_backend/cxx_shim.py), with BENCH_CXX_REAL the compiler it runs
    "BENCH_CXX",
    "BENCH_TRAINERS",  # a framework registered from outside (trainables/trainer.py): which module ran it
    "BENCH_CPUINFO",  # a simulated CPU (tests): the row says its ISA flags were not read from /proc/cpuinfo
)
STDERR_TAIL_CHARS = 2000
# The parent's checks (timeout, and the memory cap, which kills a runaway worker at most a second later). Each scans
# /proc for the worker's children: ~20 µs per process on the node, ~2.5 ms with 100. Measured here, the parent took
# 12 ms of CPU per second of trial at 0.25 s with Popen.wait(timeout) (which wakes every 50 ms), 11-12 ms at 0.25 s
# waiting on a pidfd, 3 ms at 1 s.
POLL_S = 1.0


class Unsupported(Exception):
    """The node cannot honour a value of the config (too many threads, a missing allocator)."""


def resolve_resources(
    cfg: TrialConfig, allowed_cpus: set[int], sysfs_root: Path = SYSFS_ROOT
) -> tuple[int, list[int] | None]:
    """(threads, the CPUs the worker is confined to, or None for no affinity) on this node."""
    available = len(allowed_cpus)
    if cfg.core_list is not None:
        chosen = parse_cpu_list(cfg.core_list)
        outside = sorted(set(chosen) - allowed_cpus)
        if outside:
            raise Unsupported(
                f"core_list={cfg.core_list}: CPUs {format_cpu_list(outside)} are not available (available: {format_cpu_list(allowed_cpus)})"
            )
    else:
        if cfg.cores is not None:
            count, asked = cfg.cores, f"cores={cfg.cores}"
        elif cfg.threads is not None and cfg.pinning != "none":
            count, asked = cfg.threads, f"threads={cfg.threads}"
        else:
            count, asked = available, ""  # unpinned: the OS may use any core the trial has
        if count > available:
            raise Unsupported(f"{asked} exceeds the {available} cores available to this trial")
        policy = "compact" if cfg.pinning == "none" else cfg.pinning
        try:
            chosen = select_cpus(count, policy, sysfs_root, allowed_cpus, cfg.smt)
        except ValueError as exc:  # smt=siblings on a node without SMT, an odd count, too few sibling pairs
            raise Unsupported(str(exc)) from None
    threads = cfg.threads if cfg.threads is not None else len(chosen)
    if threads > available:
        raise Unsupported(f"threads={threads} exceeds the {available} cores available to this trial")
    confined = cfg.pinning != "none" or cfg.core_list is not None or len(chosen) < available
    return threads, (chosen if confined else None)


def hardware_settings(cfg: TrialConfig) -> dict:
    return {k: getattr(cfg, k) for k in ("freq_ghz", "governor", "turbo") if getattr(cfg, k) is not None}


def unsupported_reason(
    cfg: TrialConfig, allowed_cpus: set[int] | None = None, sysfs_root: Path = SYSFS_ROOT
) -> str | None:
    """Why this node cannot run the config as asked, or None: what plan validation checks up front."""
    allowed = allowed_cpus if allowed_cpus is not None else set(os.sched_getaffinity(0))
    try:
        resolve_resources(cfg, allowed, sysfs_root)
    except (Unsupported, ValueError) as exc:
        return str(exc)
    numa = numa_unsupported_reason(cfg.numa, sysfs_root)
    if numa:
        return numa
    if cfg.allocator != "default" and find_allocator(cfg.allocator) is None:
        return missing_reason(cfg.allocator)
    for setting, value in hardware_settings(cfg).items():
        reason = control_unavailable_reason(setting, value, sysfs_root)
        if reason:
            return reason
    memory = memory_unsupported_reason(cfg, available_memory_bytes())  # a model too large to train here
    if memory:
        return memory
    framework = framework_support(cfg.framework).unsupported_reason(cfg)  # a compiler or a kernel this node lacks
    if framework:
        return framework
    return isa_unsupported_reason(cfg.isa) if cfg.isa else None


def build_worker_env(cfg: TrialConfig, threads: int, cpus: list[int] | None, base_env: dict) -> dict[str, str]:
    env = {k: v for k, v in base_env.items() if k not in ("OMP_PROC_BIND", "OMP_PLACES", "LD_PRELOAD")}
    for name in THREAD_VARIABLES:
        env[name] = str(threads)
    env.update(isa_environment(cfg.isa))
    env.update(framework_support(cfg.framework).worker_environment(cfg, base_env))  # what it reads as it starts
    env.update(
        openmp_environment(cpus, cfg.pinning, cfg.omp_proc_bind, cfg.omp_places, cfg.omp_wait, cfg.gomp_spincount)
    )
    if cfg.allocator != "default":
        env["LD_PRELOAD"] = find_allocator(cfg.allocator)  # present: unsupported_reason checked it
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), base_env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def compile_environment(cfg: TrialConfig, cache_dir: Path) -> dict[str, str]:
    """Variables the worker of a compiled trial starts with, its compile cache in `cache_dir` (framework's hook)."""
    return framework_support(cfg.framework).compile_environment(cfg, cache_dir)


def recorded_env(env: dict) -> dict[str, str]:
    return {k: v for k, v in sorted(env.items()) if k.startswith(RECORDED_PREFIXES)}


def run_trial(
    cfg: TrialConfig,
    *,
    data_dir: Path = DATA_DIR,
    output_dir: Path = OUTPUT_DIR,
    allowed_cpus: set[int] | None = None,
    worker_argv: tuple[str, ...] = WORKER_ARGV,
    poll_s: float = POLL_S,
    sysfs_root: Path = SYSFS_ROOT,
    journal_path: Path = DEFAULT_JOURNAL,
    preload_generation: int = 0,
    fingerprint_id: str | None = None,
) -> dict:
    """Run one validated config in a fresh worker process and return its flat result row. `preload_generation`: the
    sweep's round; a forked worker comes from that round's fork server (trainables/preload.py says why).
    `fingerprint_id`: the host's, where the caller knows it (a sweep's trial actor): the worker reads a cached machine
    peak with it (hwctl/machine_efficiency.py)."""
    row = base_row(cfg)
    allowed = allowed_cpus if allowed_cpus is not None else set(os.sched_getaffinity(0))
    # the same check plan validation makes: one definition of what this node cannot run
    reason = unsupported_reason(cfg, allowed, sysfs_root)
    if reason:
        return row | {"status": "unsupported", "error": reason, "finished_at": now_iso()}
    threads, cpus = resolve_resources(cfg, allowed, sysfs_root)
    env = build_worker_env(cfg, threads, cpus, dict(os.environ))
    memory_cap_mb = cfg.memory_cap_mb or int(psutil.virtual_memory().total / 2**20 * 0.9)
    row |= {
        "threads": threads,
        "affinity": format_cpu_list(cpus) if cpus is not None else None,
        "physical_cores": physical_cores(cpus if cpus is not None else allowed, sysfs_root),
        "memory_cap_mb": memory_cap_mb,
    }
    payload = worker_payload(
        cfg,
        threads,
        cpus,
        data_dir=data_dir,
        output_dir=output_dir,
        sysfs_root=sysfs_root,
        fingerprint_id=fingerprint_id,
    )
    command = [*numa_command(cfg.numa), sys.executable, *worker_argv]  # numactl execs the worker
    limits = (cfg.timeout_s, memory_cap_mb, poll_s)
    try:
        with HardwareSettings(sysfs_root, journal_path) as hardware, _jit_cache_folder(cfg) as cache_dir:
            row["hw_settings_applied"] = json.dumps(hardware.apply(**hardware_settings(cfg)))
            if cfg.jit_cache == "warm":  # an earlier run of the same config, in another process, fills the cache
                primed = _prime_jit_cache(cfg, payload, command, env, limits, cache_dir)
                row["jit_cache_prime_s"] = primed["wall_s"]
                if primed["error"]:
                    return row | {"status": "failed", "error": primed["error"], "finished_at": now_iso()}
            if cache_dir is not None:
                env = env | compile_environment(cfg, cache_dir)
            row["env"] = json.dumps(recorded_env(env))
            with preload.fork_server(cfg, worker_argv != WORKER_ARGV, env, cpus, preload_generation) as server:
                row["loadavg_before"] = load_average()
                outcome, worker_result, stderr = _spawn_worker(payload, command, env, limits, server)
                row["loadavg_after"] = load_average()
            row["preload_start_s"] = server.start_s if server is not None else None
    except ControlUnavailable as exc:
        return row | {"status": "unsupported", "error": str(exc), "finished_at": now_iso()}
    row |= worker_result | {"omp_runtime": parse_display_env(stderr)}
    row |= {k: outcome[k] for k in ("exit_code", "wall_s", "worker_start")} | {"finished_at": now_iso()}
    if outcome["reason"] is not None:  # killed by us: that reason wins over anything the worker wrote
        row |= {"status": outcome["status"], "error": outcome["reason"]}
    elif not worker_result:
        row |= {"status": "failed", "error": f"worker {describe_exit(outcome['exit_code'])}"}
    tail = strip_display_env(stderr)[-STDERR_TAIL_CHARS:]
    if row["status"] != "ok" and tail.strip():
        row["stderr_tail"] = tail
    return row


@contextlib.contextmanager
def _jit_cache_folder(cfg: TrialConfig):
    """A compiled trial's compile cache: a fresh, empty folder of its own, removed after it (None for eager)."""
    if cfg.jit_cache is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="bench-jit-") as folder:
        yield Path(folder)


def _prime_jit_cache(cfg: TrialConfig, payload: dict, command, env: dict, limits, cache_dir: Path) -> dict:
    """jit_cache=warm: the same config, run once in another worker process on the trial's cache folder so that the
    measured worker finds its compiled code there. Its steps are not measured: one step compiles what the trial runs.
    {wall_s, error (None when it primed)}."""
    quick = {"warmup_steps": 0, "measure_steps": 1, "measure_seconds": 0.0, "save_model": False}
    primer = payload | {"config": payload["config"] | quick}
    outcome, result, stderr = _spawn_worker(primer, command, env | compile_environment(cfg, cache_dir), limits)
    error = outcome["reason"] or (None if result.get("status") == "ok" else result.get("error"))
    if error is None and not result:
        error = f"worker {describe_exit(outcome['exit_code'])}"
    return {
        "wall_s": outcome["wall_s"],
        "error": f"jit_cache=warm: the run that primed the cache failed: {error}" if error else None,
    }


def worker_payload(
    cfg: TrialConfig,
    threads: int,
    cpus: list[int] | None,
    *,
    data_dir: Path,
    output_dir: Path,
    sysfs_root: Path,
    fingerprint_id: str | None = None,
) -> dict:
    """What the worker process is told (trainables/worker.py reads it): the config with its resolved threads, and the
    sysfs its frequency and energy probes read."""
    return {
        "config": cfg.to_dict() | {"threads": threads},
        "config_key": cfg.config_key(),
        "cpus": cpus,
        "data_dir": str(data_dir),
        "output_dir": str(output_dir),
        "sysfs_root": str(sysfs_root),
        "parent_pid": os.getpid(),
        # the machine peak's cache section (hwctl/machine_efficiency.py), where the caller knows the host's fingerprint
        # id (a sweep's trial actor): the worker may not import the fingerprint; without it the peak's process reads it
        "fingerprint_id": fingerprint_id,
    }


def _spawn_worker(payload: dict, command: list[str], env: dict, limits: tuple[float, int, float], server=None):
    """Run the worker on the payload, forked by `server` where one is given, else spawned; (outcome, its result or
    {}, its stdout and stderr). limits: (timeout_s, memory_cap_mb, poll_s)."""
    with tempfile.TemporaryDirectory(prefix="bench-trial-") as tmp:
        payload_path, result_path = Path(tmp) / "payload.json", Path(tmp) / "result.json"
        stderr_path = Path(tmp) / "stderr.txt"
        argv = [*command, str(payload_path), str(result_path)]
        with open(stderr_path, "wb") as stderr:
            outcome = None
            if server is not None:  # a forked worker's parent is the server: it dies with that one
                payload_path.write_text(
                    json.dumps(payload | {"parent_pid": server.server_pid, "spawned_at": time.time()})
                )
                fork = functools.partial(server.fork, payload_path, result_path, stderr_path, env)
                with contextlib.suppress(preload.PreloadUnavailable):  # the server went: spawned, as without one
                    outcome = _watch(fork, *limits, payload["cpus"]) | {"worker_start": "forked"}
            if outcome is None:
                payload_path.write_text(json.dumps(payload | {"spawned_at": time.time()}))
                spawn = functools.partial(
                    subprocess.Popen,
                    argv,
                    env=env,
                    cwd=REPO_ROOT,
                    stdin=subprocess.DEVNULL,
                    stdout=stderr,
                    stderr=stderr,
                    start_new_session=True,
                )
                outcome = _watch(spawn, *limits, payload["cpus"]) | {"worker_start": "spawned"}
        stderr_text = stderr_path.read_text(errors="replace")
        worker_result = json.loads(result_path.read_text()) if result_path.exists() else {}
    return outcome, worker_result, stderr_text


def describe_exit(code: int) -> str:
    if code < 0:
        return f"killed by signal {signal.Signals(-code).name}"
    return f"exited with code {code} without a result"
