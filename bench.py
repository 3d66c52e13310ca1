#!/usr/bin/env python3
"""bench.py: measure how CPU pre-training time of small transformer LMs changes with each variable.

Only argument parsing lives here; the work is done in trainables/, sweep/ and hwctl/.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from trainables.config import ConfigError, build_config, parse_assignments

SUMMARY_FIELDS = (
    ("status", "{}"),
    ("error", "{}"),
    ("config_key", "{}"),
    ("params", "{:,}"),
    ("threads", "{}"),
    ("affinity", "{}"),
    ("step_time_median_s", "{:.4f} s"),
    ("step_time_cv", "{:.1%}"),
    ("forward_s", "{:.4f} s"),
    ("backward_s", "{:.4f} s"),
    ("optimizer_s", "{:.4f} s"),
    ("time_to_first_step_s", "{:.3f} s"),
    ("compile_s", "{:.3f} s"),
    ("startup_s", "{:.3f} s"),
    ("tokens_per_s", "{:,.0f}"),
    ("flops_per_step", "{:.3e}"),
    ("achieved_gflops", "{:.1f}"),
    ("peak_gflops_fp32", "{:.1f}"),
    ("mfu", "{:.1%}"),
    ("peak_rss_mb", "{:.0f} MB"),
    ("loss_first", "{:.3f}"),
    ("loss_last", "{:.3f}"),
    ("projected_10k_steps_s", "{:,.0f} s"),
    ("dataset_source", "{}"),
    ("model_dir", "{}"),
)


def print_summary(row: dict) -> None:
    for key, fmt in SUMMARY_FIELDS:
        value = row.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        print(f"  {key:<22} {fmt.format(value)}")
    if row.get("stderr_tail"):
        print("  stderr (tail):")
        print("    " + row["stderr_tail"].strip().replace("\n", "\n    "))


def cmd_trial(args) -> int:
    from trainables.launcher import run_trial

    cfg = build_config(parse_assignments(args.assignments))
    row = run_trial(cfg)
    if args.json:
        print(json.dumps(row, default=str))
    else:
        print_summary(row)
    return 0 if row["status"] == "ok" else 1


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench.py",
        description="Measure CPU pre-training time of small transformer LMs. Without a command: one trial at the defaults.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    trial = commands.add_parser("trial", help="run one timed training trial in a fresh worker process (no Ray)")
    trial.add_argument(
        "assignments", nargs="*", metavar="key=value", help="config keys, e.g. width=512 attention=local"
    )
    trial.add_argument("--json", action="store_true", help="print the result row as one JSON object")
    trial.set_defaults(func=cmd_trial)
    return parser


def main(argv: list[str]) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["trial", *argv])
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"bench.py: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench.py: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
