"""Where a run's wall time went: the driver's own sections (Ray start and stop, the plan on the nodes, the settle wait,
the trials, refinement, the report) timed as they happen, and each trial's parts from its row, so every line of the
breakdown is a measured time or the difference of two measured times, never an estimate.

The trial parts come from the worker's clock (trainables/worker.py: spawn, interpreter, imports, data, model build,
the timed steps, the peak measurement) and the launcher's (`wall_s`, the process from spawn to exit, and a warm
cache's priming run). What lies between the trials is the trials' section less the workers that ran in it: Tune's
scheduling, placement groups, the trial actor and the launcher around the worker. Each `bench.py run` (a resume too)
adds one entry to `<result>/wall_time/<sweep>.json`, which the report shows.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from pathlib import Path

from hwctl.files import atomic_write_text
from trainables.columns import now_iso

# the driver's sections, in the order they run
SECTIONS = {
    "ray": "Ray start and stop",
    "plan": "the plan expanded on each node (peaks refreshed)",
    "settle": "waiting for the nodes' CPUs to settle",
    "trials": "trials (grid, repeats, control points)",
    "refinement": "refinement (Optuna, its trials)",
    "report": "summary and report",
}
# a measured trial's parts, in the order its worker passes through them
TRIAL_PARTS = {
    "preload_s": "starting a preloaded worker server (once per environment)",
    "prime_s": "priming a warm compile cache (another process)",
    "interpreter_s": "spawn and interpreter start (a fork: fork to worker)",
    "import_s": "importing the framework",
    "data_s": "loading the token cache",
    "build_s": "building the model, optimizer and batches",
    "first_step_s": "the cold first step (a compile included)",
    "warmup_s": "warm-up steps",
    "measured_s": "measured steps",
    "peak_s": "the matmul peak (cached after its first trial)",
    "exit_s": "after the steps: read-backs, result, exit",
}
FIXED_PARTS = tuple(p for p in TRIAL_PARTS if p not in ("warmup_s", "measured_s"))


def trial_parts(row: dict) -> dict[str, float] | None:
    """The parts of one measured row's worker time (seconds), or None for a row that ran no steps (a failure, an
    unsupported point, a copy of another study's measurement)."""
    if row.get("status") != "ok" or row.get("shared_from") or row.get("timed_region_s") is None:
        return None
    timed, first, measured = row["timed_region_s"], row["time_to_first_step_s"], row["measured_region_s"]
    startup, wall, peak = row["startup_s"], row["wall_s"], row.get("peak_s") or 0.0
    before_import = row.get("interpreter_start_s") or 0.0
    parts = {
        "preload_s": row.get("preload_start_s") or 0.0,  # outside wall_s: before the fork that starts wall_s
        "prime_s": row.get("jit_cache_prime_s") or 0.0,
        "import_s": row.get("import_s") or 0.0,
        "data_s": row.get("data_s") or 0.0,
        "build_s": row.get("build_s") or 0.0,
    }
    # startup_s runs from spawn to the first step: what the worker did not time itself is the interpreter's start
    parts["interpreter_s"] = max(startup - parts["import_s"] - parts["data_s"] - parts["build_s"], before_import)
    parts |= {"first_step_s": first, "warmup_s": timed - first - measured, "measured_s": measured, "peak_s": peak}
    parts["exit_s"] = max(wall - startup - timed - peak, 0.0)
    return {key: parts[key] for key in TRIAL_PARTS}


class WallTime:
    """One run's clock: sections timed with perf_counter, and the measured rows it recorded, per section."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.sections: dict[str, float] = {}  # each section's own time: the sections nested in it left out
        self.current: str | None = None
        self.trials: dict[str, list[dict[str, float]]] = {}  # section -> parts of each measured row

    @contextlib.contextmanager
    def section(self, name: str):
        """Time `name` (again: the times add up); a section opened inside another counts for itself only."""
        outer, self.current = self.current, name
        started = time.perf_counter()
        try:
            yield
        finally:
            spent = time.perf_counter() - started
            self.sections[name] = self.sections.get(name, 0.0) + spent
            if outer is not None:
                self.sections[outer] = self.sections.get(outer, 0.0) - spent
            self.current = outer

    def add_row(self, row: dict) -> None:
        parts = trial_parts(row)
        if parts is not None:
            self.trials.setdefault(self.current or "trials", []).append(parts)

    def breakdown(self) -> dict:
        """{total_s, lines: [{part, seconds}], trials, fixed_median_s, steps_share}: the driver's sections, with the
        trials' and refinement's split into the workers' parts and what lay between them."""
        total = time.perf_counter() - self.started
        rows = [parts for section in self.trials.values() for parts in section]
        lines = [
            {"part": SECTIONS[name], "seconds": self.sections[name]}
            for name in ("ray", "plan", "settle")
            if name in self.sections
        ]
        for key, label in TRIAL_PARTS.items():
            lines.append({"part": f"trial: {label}", "seconds": sum(parts[key] for parts in rows)})
        for name in ("trials", "refinement"):
            if name in self.sections:
                workers = sum(sum(parts.values()) for parts in self.trials.get(name, []))
                between = "between trials" if name == "trials" else "refinement outside its trials"
                lines.append(
                    {"part": f"{between} (Tune, placement groups, launcher)", "seconds": self.sections[name] - workers}
                )
        if "report" in self.sections:
            lines.append({"part": SECTIONS["report"], "seconds": self.sections["report"]})
        lines.append(
            {"part": "the driver's own (outside every section)", "seconds": total - sum(self.sections.values())}
        )
        steps = sum(parts["warmup_s"] + parts["measured_s"] for parts in rows)
        fixed = [sum(parts[key] for key in FIXED_PARTS) for parts in rows]
        return {
            "total_s": total,
            "lines": lines,
            "trials": len(rows),
            "fixed_median_s": statistics.median(fixed) if fixed else None,
            "steps_s": steps,
            "steps_share": steps / total if total > 0 else 0.0,
        }


def wall_time_path(result_dir: Path, sweep_id: str) -> Path:
    # beside the store, not in sweeps/: that folder holds one manifest per *.json (sweep/manifest.py)
    return Path(result_dir) / "wall_time" / f"{sweep_id}.json"


def save_breakdown(result_dir: Path, sweep_id: str, breakdown: dict, replace_last: bool = False) -> Path:
    """Add this run's breakdown to the sweep's file (a resumed sweep has one entry per run), or with `replace_last`
    put it in place of the entry this run saved before."""
    path = wall_time_path(result_dir, sweep_id)
    runs = load_breakdowns(result_dir, sweep_id)
    if replace_last and runs:
        runs.pop()
    runs.append(breakdown | {"finished_at": now_iso()})
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(runs, indent=1))
    return path


def load_breakdowns(result_dir: Path, sweep_id: str) -> list[dict]:
    path = wall_time_path(result_dir, sweep_id)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # none yet (a sweep from before this file existed), or unreadable
        return []


def breakdown_text(breakdown: dict) -> str:
    """The terminal table: each part's seconds and share of the run."""
    total = breakdown["total_s"]
    width = max(len(line["part"]) for line in breakdown["lines"])
    out = [f"where the {total:.0f} s went:"]
    for line in breakdown["lines"]:
        share = line["seconds"] / total if total > 0 else 0.0
        out.append(f"  {line['part']:<{width}}  {line['seconds']:8.1f} s  {share:6.1%}")
    if breakdown["fixed_median_s"] is not None:
        out.append(
            f"  median fixed cost per trial (all but its warm-up and measured steps): {breakdown['fixed_median_s']:.2f} s "
            f"over {breakdown['trials']} measured trials"
        )
    return "\n".join(out)


def breakdown_markdown(runs: list[dict]) -> str:
    """The report's section: one table per `bench.py run` of the sweep."""
    parts = ["## Where the time went"]
    if not runs:
        return parts[0] + "\n\nNo wall-time record for this sweep (it ran before runs recorded one)."
    for number, run in enumerate(runs, 1):
        title = f"Run {number} of {len(runs)}, finished {run.get('finished_at', '?')}: " if len(runs) > 1 else ""
        total = run["total_s"]
        table = ["| part | seconds | share |", "| --- | ---: | ---: |"]
        table += [
            f"| {line['part']} | {line['seconds']:.1f} | {line['seconds'] / total:.1%} |" for line in run["lines"]
        ]
        fixed = run.get("fixed_median_s")
        summary = (
            f"{title}{total:.0f} s in all, {run['steps_s']:.0f} s ({run['steps_share']:.0%}) inside warm-up + measured "
            f"steps"
            + (
                f"; median fixed cost per trial {fixed:.2f} s over {run['trials']} measured trials"
                if fixed is not None
                else ""
            )
        )
        parts += [summary + ". The report's own writing is not in its table.", "\n".join(table)]
    return "\n\n".join(parts)
