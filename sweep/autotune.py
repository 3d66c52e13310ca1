"""Autotune: for one model config, find the settings that make it train fastest without changing what
it computes (threads, inter-op threads, pinning, allocator, attention backend, compile, and the matmul backends that
keep fp32 arithmetic), with
Optuna's TPE through Ray Tune; then re-measure the best against the defaults alternately
(A/B/A/B, fresh worker processes each time) and report the speed-up with its spread.
"""

from __future__ import annotations

import json
import shlex
import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path

import optuna
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from hwctl.allocator import find_allocator
from hwctl.housekeeping import trial_cpus
from sweep.ledger import SweepLedger
from sweep.manifest import new_sweep_id
from sweep.nodes import Node, local_node
from sweep.results.store import Store
from sweep.tuning import StoreWriter, fit_tuner, node_bundle, ray_session, tune_point_trial
from trainables.config import CHOICES, ConfigError, build_config
from trainables.launcher import run_trial, unsupported_reason
from trainables.trainer import DEFAULT_FRAMEWORK, framework_support

# the keys autotune may change: none of them changes the model, its data or its arithmetic (blas: only the values
# a framework does not declare in blas_changes_numerics)
SETTINGS = ("threads", "interop_threads", "pinning", "allocator", "attn_backend", "compile", "blas")


@dataclass
class AutotuneResult:
    sweep_id: str
    best: dict
    default: dict
    speedup: float
    speedup_low: float
    speedup_high: float
    ab_rows: list[dict]
    command: str


def blas_choices(base: dict, framework: str) -> list[str]:
    """The framework's blas values that keep fp32 arithmetic and that the base config can run on this node (its
    precision, its other keys, the node's kernels: torch's onednn-fp32 runs fp32 only)."""
    support = framework_support(framework)
    kept = [v for v in support.values("blas") if v not in support.blas_changes_numerics]
    runnable = []
    for value in kept:
        try:
            cfg = build_config(base | {"framework": framework, "blas": value})
        except ConfigError:
            continue
        if unsupported_reason(cfg, trial_cpus()) is None:
            runnable.append(value)
    return runnable


def search_space(
    include_compile: bool, framework: str = DEFAULT_FRAMEWORK, base: dict | None = None
) -> dict[str, list]:
    """The settings worth trying for `framework`: only values its declaration says it can run
    (trainables/<name>_backend/support.py; a framework that declares nothing: the keys' CHOICES)."""
    cores = len(trial_cpus())  # the node's CPUs less its housekeeping ones
    support = framework_support(framework)
    space = {
        "threads": sorted({1, *range(2, cores + 1, 2), cores}),
        "interop_threads": sorted({1, 2, min(4, cores)}) if "interop_threads" in support.honours else [1],
        "pinning": ["none", "compact", "spread"],
        "allocator": ["default"] + [a for a in ("jemalloc", "tcmalloc") if find_allocator(a)],
        "attn_backend": sorted(support.values("attn_backend") or CHOICES["attn_backend"]),
    }
    blas = blas_choices(base or {}, framework)
    if len(blas) > 1:
        space["blas"] = blas
    compiler = next((c for c in support.values("compile") if c != "eager"), None)  # its first: inductor, jit
    if include_compile and compiler and "eager" in support.values("compile"):
        # a compile that generates C++ code needs a C++ compiler on the node
        if compiler not in support.native_code_compiles or shutil.which("cc") or shutil.which("gcc"):
            space["compile"] = ["eager", compiler]
    return space


def defaults_of(base: dict, space: dict) -> dict:
    cfg = build_config(base)
    values = {k: getattr(cfg, k) for k in space}
    values["threads"] = values["threads"] or len(trial_cpus())
    return values


def reproduce_command(base: dict, settings: dict) -> str:
    """The user's own keys plus the best settings, as one `bench.py trial` command."""
    keys = {k: v for k, v in base.items() if k not in settings} | settings
    return "python bench.py trial " + shlex.join(f"{k}={v}" for k, v in keys.items())


def autotune(
    base: dict,
    result_dir: Path,
    *,
    trials: int = 12,
    ab_rounds: int = 2,
    include_compile: bool = True,
    quiet: bool = False,
) -> AutotuneResult:
    framework = build_config(base).framework  # validated once, up front
    space = search_space(include_compile, framework, base)
    default = defaults_of(base, space)
    sweep_id = new_sweep_id("autotune", result_dir)
    sweep = SweepLedger(sweep_id, "autotune", Store(result_dir), quiet=quiet, expected=trials)
    with ray_session(quiet=quiet):
        node = local_node()
        search(sweep, base, space, default, trials, node, result_dir)
    searched = [r for r in sweep.store.rows(sweep_id) if r["status"] == "ok"]
    if not searched:
        raise RuntimeError(f"autotune {sweep_id}: no trial finished; see bench.py query over sweep '{sweep_id}'")
    best_row = min(searched, key=lambda r: r["step_time_median_s"])
    best = {k: best_row[k] for k in space}
    # the A/B rows print no progress line: the ledger's [done/total] counts the searched settings
    sweep.quiet = True
    ab_rows = ab_measure(sweep, base, default, best, ab_rounds, node.ip)
    a = [r["step_time_median_s"] for r in ab_rows if r["ab_arm"] == "default"]
    b = [r["step_time_median_s"] for r in ab_rows if r["ab_arm"] == "best"]
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    return AutotuneResult(
        sweep_id,
        best,
        default,
        statistics.median(a) / statistics.median(b),
        min(ratios),
        max(ratios),
        ab_rows,
        reproduce_command(base, best),
    )


def search(
    sweep: SweepLedger, base: dict, space: dict, default: dict, trials: int, node: Node, result_dir: Path
) -> None:
    """Optuna's TPE through Ray Tune over the space, on this node: `trials` settings, the defaults first."""
    searcher = OptunaSearch(
        metric="step_time_median_s",
        mode="min",
        points_to_evaluate=[default],  # measure the defaults first: TPE starts from a known point
        # TPE samples at random for its first n_startup_trials (10 by default): with a budget of a
        # dozen trials that would be all of them
        sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=max(2, trials // 3)),
    )
    fit_tuner(
        tune_point_trial,
        {"base": base, "study": "autotune", "phase": "autotune"},
        node_bundle(node.ip, node.cpus),
        search_alg=searcher,
        num_samples=trials,
        max_concurrent_trials=1,
        store_writer=StoreWriter(sweep, ("autotune", "autotune", base, node.ip)),
        name=sweep.sweep_id,
        result_dir=result_dir,
        param_space={k: tune.choice(v) for k, v in space.items()},
    )


def ab_measure(sweep: SweepLedger, base: dict, default: dict, best: dict, rounds: int, node: str) -> list[dict]:
    """Default and best alternately (A/B/A/B...), each a fresh worker with the same protocol."""
    rows = []
    for round_index in range(rounds):
        for arm, settings in (("default", default), ("best", best)):
            row = run_trial(build_config(base | settings), allowed_cpus=trial_cpus())  # the search's CPUs
            row |= {
                "node": node,
                "study": "autotune-ab",
                "phase": "ab",
                "ab_arm": arm,
                "ab_round": round_index,
                "point": json.dumps(settings, default=str),
            }
            rows.append(sweep.record(row))
            if row["status"] != "ok":
                raise RuntimeError(f"A/B re-measurement of {arm} failed: {row['error']}")
    return rows
