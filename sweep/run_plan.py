"""`bench.py run` from a plan to its report: a new sweep's plan checked before Ray starts, the sweep run
(sweep/runner.py `run_sweep`), then its study summary, closing line and report printed.
"""

from __future__ import annotations

from pathlib import Path

from sweep.console import sweep_closing
from sweep.ledger import SweepLedger
from sweep.nodes import expand_here
from sweep.plan import expand_plan
from sweep.results.findings import findings_text
from sweep.results.resolution import ratio_lines, resolution_text, sweep_budget
from sweep.results.store import Store
from sweep.results.tables import study_summary
from sweep.results.wall_time import WallTime, breakdown_text, save_breakdown
from sweep.run_lock import exclusive_run
from sweep.runner import run_sweep


def check_new_plan(document, source: str, *, address: str | None, record_unsupported: bool) -> None:
    """A PlanError now, before Ray starts, for a plan that cannot run: on this machine alone, every problem;
    on a cluster (address), the plan's own problems, since what each node can run is asked on the node."""
    if not address:
        expand_plan(document, source, record_unsupported=record_unsupported)
    else:
        expand_here(document, source)


def run_plan(document: dict | None, source: str | None, result_dir: Path, **sweep_options) -> SweepLedger:
    """The sweep (a new one from document, or with resume=True the one it continues) run with run_sweep's
    options, holding the machine's and the store's run locks (`queue`: wait for another run's), then its study
    summary, closing line, where the time went and report printed; returns it."""
    wall_time = WallTime()
    queue = sweep_options.pop("queue", False)
    with exclusive_run(result_dir, local=not sweep_options.get("address"), queue=queue):
        sweep = run_sweep(document, source, result_dir, wall_time=wall_time, **sweep_options)
    with wall_time.section("report"):
        summary = study_summary(Store(result_dir), sweep.sweep_id)
        budget = sweep_budget(result_dir, sweep.sweep_id)
        stored = Store(result_dir).rows(sweep.sweep_id)
        lines = ratio_lines(stored, budget)
        summary += "\n\n" + resolution_text(lines, budget) + "\n" + findings_text(lines, stored)
        # saved first, so that the report shows this run (all but the report's own writing)
        save_breakdown(result_dir, sweep.sweep_id, wall_time.breakdown())
        from sweep.results.report import write_report

        report = write_report(Store(result_dir), sweep.sweep_id)
    breakdown = wall_time.breakdown()
    save_breakdown(result_dir, sweep.sweep_id, breakdown, replace_last=True)
    print()
    print(summary)
    print(sweep_closing(sweep, breakdown["total_s"], result_dir))
    print(breakdown_text(breakdown))
    print(f"report: {report}\npage: {report.with_suffix('.html').resolve().as_uri()}")
    return sweep
