#!/usr/bin/env python3
"""bench.py: measure how CPU pre-training time of small transformer LMs changes with each variable.

Only argument parsing lives here; the work is done in trainables/, sweep/ and hwctl/.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from sweep.cli_errors import run_reporting_errors
from sweep.predict.cli import add_predict_parser
from sweep.results.store import DEFAULT_RESULT_DIR
from sweep.results.store_check import add_check_parser
from trainables.columns import KINDS, columns_markdown
from trainables.config import ConfigError, build_config, parse_assignments
from trainables.dataset import OFFLINE_DATASET


def offline_dataset(values: dict) -> dict:
    """--dataset-offline: the config values with dataset=offline; naming another dataset as well is an error."""
    named = values.get("dataset")
    if named not in (None, "", "auto", OFFLINE_DATASET):
        raise ConfigError(f"--dataset-offline contradicts dataset={named}")
    return values | {"dataset": OFFLINE_DATASET}


def cmd_trial(args) -> int:
    from sweep.console import trial_summary
    from trainables.launcher import run_trial

    values = parse_assignments(args.assignments)
    cfg = build_config(offline_dataset(values) if args.dataset_offline else values)
    row = run_trial(cfg)
    if args.json:
        print(json.dumps(row, default=str))
    elif summary := trial_summary(row):
        print(summary)
    return 0 if row["status"] == "ok" else 1


def cmd_plan(args) -> int:
    from sweep.console import plan_table
    from sweep.plan import load_plan

    plan = load_plan(args.plan, record_unsupported=args.record_unsupported)
    print(plan_table(plan))
    return 0


def cmd_run(args) -> int:
    from hwctl.housekeeping import set_housekeeping_count
    from sweep.budget import cli_budget
    from sweep.plan import read_plan_document
    from sweep.run_plan import check_new_plan, run_plan

    document = source = None
    if args.resume and args.dataset_offline:
        raise ConfigError("--dataset-offline starts a new sweep; --resume continues one with its own datasets")
    if args.address and args.dashboard is not None:
        raise ConfigError(
            "--dashboard/--no-dashboard apply to a Ray started here; with --address the cluster's head decides "
            "(ray start --include-dashboard=true|false)"
        )
    try:  # N goes to the sweep's nodes through BENCH_HOUSEKEEPING_CPUS; a bad one: exit 2 before Ray starts
        housekeeping = set_housekeeping_count(args.housekeeping_cpus, here=not args.address)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not args.resume:
        document, source = read_plan_document(args.plan)
        if args.dataset_offline and isinstance(document, dict) and isinstance(document.get("baseline") or {}, dict):
            document = document | {"baseline": offline_dataset(document.get("baseline") or {})}
        check_new_plan(document, source, address=args.address, record_unsupported=args.record_unsupported)
    sweep = run_plan(
        document,
        source,
        Path(args.result_dir),
        resume=args.resume,
        resume_sweep=args.sweep,
        address=args.address,
        nodes=args.nodes,
        record_unsupported=args.record_unsupported,
        dashboard_host=args.dashboard_host,
        dashboard_port=args.dashboard_port,
        repeats=args.repeats,
        dashboard=args.dashboard if args.dashboard is not None else housekeeping >= 1,  # on with a CPU of its own
        budget_s=cli_budget(args.budget, args.resume),
        queue=args.queue,
    )
    if sweep.missing():
        print(f"{len(sweep.missing())} trials still missing: python bench.py run --resume --sweep {sweep.sweep_id}")
        return 1
    return 0


def cmd_report(args) -> int:
    import webbrowser

    from sweep.results.report import write_report
    from sweep.results.store import Store

    path = write_report(Store(args.result_dir), args.sweep, tokens=args.tokens)
    page = path.with_suffix(".html").resolve().as_uri()
    print(f"report: {path}\npage: {page}")
    if args.open and (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or sys.platform == "darwin"):
        webbrowser.open(page)
    return 0


def cmd_compare(args) -> int:
    from sweep.console import comparison_output
    from sweep.results import compare
    from sweep.results.store import Store

    store = Store(args.result_dir)
    comparison = compare.build_comparison(compare.load_rows(store, args.sweep), by=args.by, ref=args.ref)
    path = compare.write_compare(comparison, Path(args.out) if args.out else store.root / "report" / "compare")
    print(comparison_output(comparison, args.format), end="")
    if args.format == "table":
        print(f"\ncomparison: {path}")
    else:
        print(f"comparison: {path}", file=sys.stderr)  # stdout stays pure data
    return 0


def cmd_autotune(args) -> int:
    from sweep.autotune import autotune
    from sweep.console import autotune_summary

    base = parse_assignments(args.assignments)
    build_config(base)  # a bad key or value: exit 2 before Ray starts
    result = autotune(
        base, Path(args.result_dir), trials=args.trials, ab_rounds=args.ab_rounds, include_compile=args.compile
    )
    print(autotune_summary(result, args.trials, args.ab_rounds))
    return 0


def cmd_query(args) -> int:
    from sweep.console import query_output
    from sweep.results.store import Store

    columns, rows = Store(args.result_dir).query(args.sql)
    print(query_output(columns, rows, args.format), end="")
    return 0


def cmd_columns(args) -> int:
    from sweep.console import columns_table

    print(columns_markdown() if args.markdown else columns_table(args.kind))
    return 0


def cmd_hw(args) -> int:
    from hwctl.journal import restore_pending

    if args.action == "restore":
        print(restore_pending() or "nothing to restore: no hardware setting is left changed")
        return 0
    from hwctl.fingerprint import full_fingerprint
    from hwctl.fingerprint_text import format_fingerprint
    from hwctl.microbench import measure_host_peaks
    from trainables.launcher import DATA_DIR

    fingerprint = full_fingerprint()
    if args.peaks:
        counts = sorted({1, *range(2, len(os.sched_getaffinity(0)) + 1, 2), len(os.sched_getaffinity(0))})
        fingerprint["peaks"] = measure_host_peaks(counts, DATA_DIR / "hw")
    print(json.dumps(fingerprint, indent=1, default=str) if args.json else format_fingerprint(fingerprint))
    return 0


RECORD_UNSUPPORTED_HELP = "values this machine cannot honour become 'unsupported' rows"
DATASET_OFFLINE_HELP = (
    "train on the offline corpus (dataset=offline, the Python docs) instead of the hub dataset; without it the "
    "default dataset is the hub's where this node can have it, and offline otherwise"
)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench.py",
        description="Measure CPU pre-training time of small transformer LMs. Without a command: run --plan quick.",
    )
    # the options every command that reads or writes the store shares
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument("--result-dir", default=str(DEFAULT_RESULT_DIR), help="the store (default: result/)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_trial_parser(commands)
    add_plan_parser(commands)
    add_run_parser(commands, store)
    add_report_parser(commands, store)
    add_compare_parser(commands, store)
    add_autotune_parser(commands, store)
    add_query_parser(commands, store)
    add_check_parser(commands, store)
    add_predict_parser(commands, store)
    add_columns_parser(commands)
    add_hw_parser(commands)
    return parser


def add_trial_parser(commands) -> None:
    trial = commands.add_parser("trial", help="run one timed training trial in a fresh worker process (no Ray)")
    trial.add_argument(
        "assignments", nargs="*", metavar="key=value", help="config keys, e.g. width=512 attention=local"
    )
    trial.add_argument("--json", action="store_true", help="print the result row as one JSON object")
    trial.add_argument("--dataset-offline", action="store_true", help=DATASET_OFFLINE_HELP)
    trial.set_defaults(func=cmd_trial)


def add_plan_parser(commands) -> None:
    plan = commands.add_parser("plan", help="expand and validate a plan without running it; print its trials")
    plan.add_argument("plan", help="a shipped plan name (smoke, quick, full) or a YAML path")
    plan.add_argument("--record-unsupported", action="store_true", help=RECORD_UNSUPPORTED_HELP)
    plan.set_defaults(func=cmd_plan)


def add_run_parser(commands, store) -> None:
    run = commands.add_parser(
        "run", parents=[store], help="run a plan as a Ray Tune sweep; rows go to the Parquet store"
    )
    run.add_argument("--plan", default="quick", help="plan name or YAML path (default: quick)")
    run.add_argument(
        "--resume", action="store_true", help="continue an interrupted sweep (the newest unfinished one, or --sweep)"
    )
    run.add_argument("--sweep", help="with --resume: the sweep id to continue")
    run.add_argument("--queue", action="store_true", help="wait for a sweep running on this machine or store to end")
    run.add_argument(
        "--repeats",
        type=int,
        metavar="N",
        help="run each point N times (1 to 20), in shuffled rounds; overrides the plan's repeats (default 1)",
    )
    run.add_argument(
        "--budget",
        metavar="TIME",
        help="the whole run's time budget (900, 900s, 15m, 1h; overrides the plan's budget): after the plan's repeats, "
        "rounds of the points whose ratios are still undecided until it is spent (README: 'Budget and racing')",
    )
    run.add_argument("--record-unsupported", action="store_true", help=RECORD_UNSUPPORTED_HELP)
    run.add_argument("--dataset-offline", action="store_true", help=DATASET_OFFLINE_HELP + " (the plan's baseline)")
    run.add_argument(
        "--address", help="run on an existing Ray cluster (auto or HOST:PORT) instead of starting one on this machine"
    )
    run.add_argument(
        "--nodes",
        default="all",
        help="with --address: all (default) or a comma list of node IPs/hostnames; every trial runs once on each",
    )
    run.add_argument(
        "--dashboard-host", default="127.0.0.1", help="address the Ray dashboard listens on (default 127.0.0.1)"
    )
    run.add_argument("--dashboard-port", type=int, default=8265)
    run.add_argument(
        "--dashboard",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="start the local Ray with its dashboard at --dashboard-host:--dashboard-port, to watch the trials live "
        "(default: on with a housekeeping CPU; off without one: its processes then took about a third of the CPU "
        "time others took on the trials' cores, benchmarks/README.md); not with --address",
    )
    run.add_argument(
        "--housekeeping-cpus",
        type=int,
        metavar="N",
        help="pin Ray's processes (GCS, raylet, dashboard, driver, trial actors) to each node's last N CPUs (whole "
        "SMT cores), which trials leave alone: 'all' cores is the rest (default: 1 from 4 CPUs on, else 0)",
    )
    run.set_defaults(func=cmd_run)


def add_report_parser(commands, store) -> None:
    report = commands.add_parser(
        "report", parents=[store], help="write result/report/<sweep>/index.md with plots, fits and projections"
    )
    report.add_argument("--sweep", help="the sweep id (default: the most recent)")
    report.add_argument("--tokens", type=float, help="also project the time to train on this many tokens, e.g. 1e9")
    report.add_argument("--open", action="store_true", help="open index.html in a browser where there is a display")
    report.set_defaults(func=cmd_report)


def add_compare_parser(commands, store) -> None:
    compare = commands.add_parser(
        "compare",
        parents=[store],
        help="the same configs on several hosts side by side: step time, tokens/s, speed-up vs a reference host, "
        "the recorded hardware; writes compare.md and one plot per study",
    )
    compare.add_argument(
        "--by",
        choices=("host", "node"),
        default="host",
        help="group rows by hostname (default; hosts sharing a name are split by IP as 'host (ip)') or by node IP",
    )
    compare.add_argument(
        "--ref", help="the reference: a hostname or node IP (default: the one with the most ok rows, ties by name)"
    )
    compare.add_argument(
        "--sweep",
        help="one sweep id, or 'latest' (default: every sweep in the store; a config_key is the same config in any "
        "sweep, and each cell is the median over that host's rows, with their count)",
    )
    compare.add_argument(
        "--format",
        choices=("table", "csv", "json"),
        default="table",
        help="table (default): the side-by-side, speed-up and recorded-variables tables; csv: one record per config "
        "and host; json: those records and the recorded variables per host",
    )
    compare.add_argument("--out", help="folder for compare.md and the PNGs (default: <result-dir>/report/compare)")
    compare.set_defaults(func=cmd_compare)


def add_autotune_parser(commands, store) -> None:
    autotune = commands.add_parser(
        "autotune",
        parents=[store],
        help="find the fastest settings (threads, pinning, allocator, ...) for one model config",
    )
    autotune.add_argument("assignments", nargs="*", metavar="key=value", help="the model config, e.g. width=512")
    autotune.add_argument("--trials", type=int, default=12, help="settings Optuna (TPE) tries (default 12)")
    autotune.add_argument(
        "--ab-rounds", type=int, default=2, help="A/B re-measurement rounds of best vs default (default 2)"
    )
    autotune.add_argument(
        "--no-compile", dest="compile", action="store_false", help="leave torch.compile out of the search"
    )
    autotune.set_defaults(func=cmd_autotune)


def add_query_parser(commands, store) -> None:
    query = commands.add_parser(
        "query", parents=[store], help="run DuckDB SQL over the store (the view is called trials)"
    )
    query.add_argument("sql", help='e.g. "SELECT study, width, step_time_median_s FROM trials ORDER BY 1"')
    query.add_argument("--format", choices=("table", "csv", "json"), default="table")
    query.set_defaults(func=cmd_query)


def add_columns_parser(commands) -> None:
    columns = commands.add_parser(
        "columns", help="list every result column: its kind (config, metric, recorded, run), type, unit and meaning"
    )
    columns.add_argument("--kind", choices=KINDS, help="only this kind")
    columns.add_argument("--markdown", action="store_true", help="the README's Markdown tables")
    columns.set_defaults(func=cmd_columns)


def add_hw_parser(commands) -> None:
    hw = commands.add_parser(
        "hw", help="print this node's hardware fingerprint and measured peaks; 'hw restore' undoes left-over settings"
    )
    hw.add_argument("action", nargs="?", choices=("show", "restore"), default="show")
    hw.add_argument("--json", action="store_true", help="one JSON object")
    hw.add_argument(
        "--no-peaks", dest="peaks", action="store_false", help="skip the (cached) bandwidth and matmul peaks"
    )
    hw.set_defaults(func=cmd_hw)


def _terminate(signum, frame):
    raise KeyboardInterrupt  # SIGTERM unwinds like Ctrl-C: workers are killed, Ray is shut down


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    from hwctl.journal import restore_pending

    message = restore_pending()  # a run killed with -9 may have left a frequency pinned
    if message:
        print(f"bench.py: {message}", file=sys.stderr)
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["run", *argv])
    return run_reporting_errors(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
