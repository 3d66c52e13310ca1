#!/usr/bin/env python3
"""How far a sweep's numbers repeat: two runs of a plan compared point by point, the baseline's spread inside a
sweep, and the same baseline through back-to-back `bench.py trial` runs outside Ray.

    venv/bin/python benchmarks/repeatability.py trials --runs 9 [--json out.json]
    venv/bin/python benchmarks/repeatability.py sweeps RESULT_DIR_A RESULT_DIR_B [--trials-json out.json]

`trials` runs the quick plan's baseline through `bench.py trial --json` `--runs` times, one after another (what a
user outside a sweep would do), and prints each run's median step time and CV. `sweeps` reads the newest sweep of
each result directory and prints:
- per distinct config (rows `shared_from IS NULL`, so a config several studies share counts once): the median over
  its repeats in A and in B, and |B − A| / A; the median of that over the configs; and the same for each config's
  ratio to its own sweep's baseline median;
- the baseline's measurements inside each sweep (its control points and its own repeats): max/min of their medians,
  and the median of their per-trial CVs;
- with `--trials-json` (the output of `trials`): the same two figures for the back-to-back `bench.py trial` runs;
- each sweep's wall time, its share inside warm-up + measured steps, and its foreign CPU seconds per trial.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sweep.results.store import Store  # noqa: E402
from trainables.config import build_config  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent


def quick_baseline() -> dict:
    return yaml.safe_load((REPO_ROOT / "sweep/plans/quick.yaml").read_text())["baseline"]


def spread(rows: list[dict]) -> dict:
    medians = [r["step_time_median_s"] for r in rows]
    return {
        "n": len(rows),
        "medians_ms": [round(m * 1e3, 1) for m in medians],
        "max_over_min": max(medians) / min(medians),
        "median_cv": statistics.median(r["step_time_cv"] for r in rows),
    }


def cmd_trials(args) -> int:
    assignments = [f"{key}={value}" for key, value in quick_baseline().items()]
    rows = []
    for run in range(args.runs):
        out = subprocess.run(
            [sys.executable, "bench.py", "trial", "--json", *assignments],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(
            f"run {run}: median {row['step_time_median_s'] * 1e3:6.1f} ms  CV {row['step_time_cv']:.1%}  "
            f"steps {row['measure_steps_run']}  foreign {row['foreign_cpu_s']:.2f} s",
            flush=True,
        )
    s = spread(rows)
    print(f"{s['n']} runs: max/min of medians {s['max_over_min']:.3f}, median CV {s['median_cv']:.1%}")
    if args.json:
        args.json.write_text(json.dumps(rows, default=str))
    return 0


def newest_sweep_rows(result_dir: Path) -> list[dict]:
    store = Store(result_dir)
    rows = store.rows()
    newest = max({r["sweep"] for r in rows})
    return [r for r in rows if r["sweep"] == newest]


def per_config_medians(rows: list[dict]) -> dict[str, float]:
    """config_key -> median over its measurements (grid and control phases; copies and refined points left out)."""
    times: dict[str, list[float]] = {}
    for r in rows:
        if r["status"] == "ok" and not r.get("shared_from") and r.get("phase") in ("grid", "control"):
            times.setdefault(r["config_key"], []).append(r["step_time_median_s"])
    return {key: statistics.median(ts) for key, ts in times.items()}


def sweep_figures(rows: list[dict]) -> dict:
    ok = [r for r in rows if r["status"] == "ok" and not r.get("shared_from")]
    started = min(r["started_at"] for r in rows)
    finished = max(r["finished_at"] for r in rows)
    steps = sum(r["timed_region_s"] - r["time_to_first_step_s"] for r in ok)
    return {
        "trials": len(ok),
        "first_start": started,
        "last_finish": finished,
        "steps_s": steps,
        "foreign_cpu_s_median": statistics.median(r["foreign_cpu_s"] for r in ok if r.get("foreign_cpu_s") is not None),
        "foreign_cpu_s_max": max(r["foreign_cpu_s"] for r in ok if r.get("foreign_cpu_s") is not None),
    }


def cmd_sweeps(args) -> int:
    baseline = build_config(quick_baseline()).config_key()
    runs = [newest_sweep_rows(d) for d in args.result_dirs]
    a, b = (per_config_medians(rows) for rows in runs)
    common = sorted(set(a) & set(b))
    diffs = {key: abs(b[key] - a[key]) / a[key] for key in common}
    print(f"{len(common)} configs in both runs: median |B-A|/A {statistics.median(diffs.values()):.1%}")
    # the same for each config's ratio to its own sweep's baseline: what a report's "vs first" ratios rest on
    ra, rb = a[baseline], b[baseline]
    ratio_diffs = [abs((b[key] / rb) / (a[key] / ra) - 1) for key in common if key != baseline]
    print(
        f"  ratios to each sweep's own baseline median ({ra * 1e3:.1f} ms in A, {rb * 1e3:.1f} ms in B): median "
        f"|ratio B / ratio A - 1| {statistics.median(ratio_diffs):.1%} over {len(ratio_diffs)} configs"
    )
    worst = sorted(diffs.items(), key=lambda kv: -kv[1])[:5]
    names = {r["config_key"]: f"{r['study']} {r['point']}" for r in runs[0] if not r.get("shared_from")}
    for key, d in worst:
        print(f"  {names.get(key, key):40s} A {a[key] * 1e3:7.1f} ms  B {b[key] * 1e3:7.1f} ms  {d:.1%}")
    for label, rows in zip("AB", runs, strict=True):
        base = [
            r
            for r in rows
            if r["status"] == "ok"
            and not r.get("shared_from")
            and r["config_key"] == baseline
            and r.get("phase") in ("grid", "control")
        ]
        base.sort(key=lambda r: r["trial_order"])
        s = spread(base)
        f = sweep_figures(rows)
        print(
            f"run {label}: baseline measured {s['n']} times in the sweep: {s['medians_ms']} ms; max/min "
            f"{s['max_over_min']:.3f}; median CV {s['median_cv']:.1%}. {f['trials']} trials, steps {f['steps_s']:.0f} s, "
            f"first start {f['first_start']}, last finish {f['last_finish']}; foreign CPU per trial median "
            f"{f['foreign_cpu_s_median']:.2f} s, max {f['foreign_cpu_s_max']:.2f} s"
        )
    if args.trials_json:
        trials = json.loads(args.trials_json.read_text())
        s = spread(trials)
        print(
            f"bench.py trial, back to back: {s['n']} runs {s['medians_ms']} ms; max/min {s['max_over_min']:.3f}; "
            f"median CV {s['median_cv']:.1%}"
        )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    trials = sub.add_parser("trials")
    trials.add_argument("--runs", type=int, default=9)
    trials.add_argument("--json", type=Path)
    trials.set_defaults(func=cmd_trials)
    sweeps = sub.add_parser("sweeps")
    sweeps.add_argument("result_dirs", type=Path, nargs=2)
    sweeps.add_argument("--trials-json", type=Path)
    sweeps.set_defaults(func=cmd_sweeps)
    args = parser.parse_args()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
