#!/usr/bin/env python3
"""A trial's fixed cost with its worker spawned (a fresh `python -m trainables.worker`) and forked (from the node's
fork server, trainables/preload.py).

    venv/bin/python benchmarks/fixed_cost.py [--trials 6] [--width 128] [--json out.json]

Runs `--trials` identical small eager-torch trials per mode through `run_trial`, alternating spawned and forked
(BENCH_PRELOAD=0 / 1), after one discarded trial per mode that builds the token and peak caches and starts the fork
server. Prints, per mode, the median of:
- wall_s − timed_region_s: everything in the worker's wall time outside its timed region (the cold first step is
  inside it);
- the project's fixed cost (sweep/results/wall_time.py: the trial's parts but its warm-up and measured steps, the cold
  first step included), as `bench.py run`'s closing table reports it;
and the fork server's start (preload_start_s, outside every wall_s): paid once per environment, by the first trial.
Caches and servers live in a temporary folder: the checkout's data/ is not touched.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sweep.results.wall_time import FIXED_PARTS, trial_parts  # noqa: E402
from trainables import preload  # noqa: E402
from trainables.config import build_config  # noqa: E402
from trainables.launcher import run_trial  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent

MODES = {"spawned": "0", "forked": "1"}


def small_config(width: int) -> dict:
    return dict(
        depth=2,
        width=width,
        heads=2,
        seq_len=128,
        batch_size=4,
        vocab_size=512,
        warmup_steps=1,
        measure_steps=3,
        measure_seconds=0.0,
        dataset="offline",  # no hub: the corpus every machine has
    )


def quick_baseline() -> dict:
    plan = yaml.safe_load((REPO_ROOT / "sweep/plans/quick.yaml").read_text())
    return plan["baseline"] | {"dataset": "offline"}


def run(mode: str, cfg, data_dir: Path) -> dict:
    os.environ[preload.ENABLE_VARIABLE] = MODES[mode]
    row = run_trial(cfg, data_dir=data_dir, output_dir=data_dir / "output")
    if row["status"] != "ok" or row["worker_start"] != mode:
        raise SystemExit(f"{mode} trial: {row['status']} {row.get('worker_start')}: {row.get('error')}")
    parts = trial_parts(row)
    return {
        "outside_timed_s": row["wall_s"] - row["timed_region_s"],
        "fixed_s": sum(parts[key] for key in FIXED_PARTS),
        **{key: parts[key] for key in FIXED_PARTS},
        "wall_s": row["wall_s"],
        "preload_start_s": row["preload_start_s"],
        "step_time_median_s": row["step_time_median_s"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=6, help="measured trials per mode")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--json", type=Path, help="write every trial's figures here")
    parser.add_argument(
        "--quick-baseline",
        action="store_true",
        help="the quick plan's baseline (3 s of steps) instead of a small model",
    )
    args = parser.parse_args()
    cfg = build_config(quick_baseline() if args.quick_baseline else small_config(args.width))
    with tempfile.TemporaryDirectory(prefix="bench-fixed-cost-") as folder:
        data_dir = Path(folder)
        os.environ[preload.DIR_VARIABLE] = str(data_dir / "preload")
        try:
            first = {mode: run(mode, cfg, data_dir) for mode in MODES}  # caches built, server started: not counted
            trials = {mode: [] for mode in MODES}
            for _ in range(args.trials):
                for mode in MODES:
                    trials[mode].append(run(mode, cfg, data_dir))
        finally:
            preload.stop_servers(data_dir / "preload")
    model = "the quick baseline" if args.quick_baseline else f"width {args.width}"
    print(f"{args.trials} trials per mode, eager torch, {model}, alternating; medians:")
    print(f"{'mode':8} {'wall_s':>7} {'wall − timed':>12} {'fixed (wall_time)':>17}   fixed parts (s)")
    for mode, rows in trials.items():
        medians = {key: statistics.median(r[key] for r in rows) for key in rows[0] if key != "preload_start_s"}
        steps = [r["step_time_median_s"] for r in rows]
        spread = f"; step time {min(steps) * 1e3:.1f}-{max(steps) * 1e3:.1f} ms, sd of log {statistics.stdev(math.log(x) for x in steps):.1%}"
        # peak: ~0 once cached; a node too busy for an undisturbed peak measures it again in every trial
        fixed_parts = " ".join(f"{key.removesuffix('_s')} {medians[key]:.2f}" for key in FIXED_PARTS)
        print(
            f"{mode:8} {medians['wall_s']:7.2f} {medians['outside_timed_s']:12.2f} {medians['fixed_s']:17.2f}   "
            f"{fixed_parts}{spread}"
        )
    print(
        f"fork server start (once per environment, before the first forked trial): {first['forked']['preload_start_s']:.2f} s"
    )
    if args.json:
        args.json.write_text(json.dumps({"first": first, "trials": trials}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
