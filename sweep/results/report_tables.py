"""The report's whole-sweep tables: forward/backward/optimizer per trial with noisy rows flagged and whether others
disturbed them, projections per point to 10,000 steps and to a token budget, and every trial that did not finish ok
with its reason.
"""

from __future__ import annotations

import math

from sweep.results.rows import is_number, is_positive, md_table, ms, point_text

PROJECTION_STEPS = 10_000
ASSUMPTIONS = (
    "Assumptions: every step takes the steady-state median step time measured after warm-up (compile and cold start "
    "excluded); data loading, evaluation and checkpointing are excluded; one process on the cores this trial was "
    "pinned to, with nothing else running."
)


def config(row: dict) -> str:
    return f"{row.get('study')}: {point_text(row)}" + (f" on {row['_node']}" if row.get("_node") else "")


def duration(seconds: float) -> str:
    """'42 s', '3 m 20 s', '1 h 23 m', '2 d 5 h': two units are enough to plan a run."""
    s = int(round(seconds))
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if s >= size:
            return f"{s // size} {unit} {s % size // sub_size} {sub}"
    return f"{seconds:.3g} s" if seconds < 10 else f"{s} s"


def seconds_and_duration(seconds: float) -> str:
    return f"{seconds:.0f} s ({duration(seconds)})" if seconds >= 60 else duration(seconds)


def disturbance(row: dict) -> list[str]:
    """A noisy row's foreign CPU share (foreign_cpu_s per second of measured_region_s) and steal_s; "?" where the row
    predates those columns or /proc was unreadable."""

    def known(v) -> bool:
        return is_number(v) and math.isfinite(v)

    foreign, region, steal = row.get("foreign_cpu_s"), row.get("measured_region_s"), row.get("steal_s")
    share = f"{foreign / region:.1%}" if known(foreign) and known(region) and region > 0 else "?"
    return [share, f"{steal:.2f}" if known(steal) else "?"]


def phase_table(rows: list[dict], noisy_cv: float) -> str:
    ok = [r for r in rows if r["_ok"]]
    table = []
    for r in ok:
        cv = r.get("step_time_cv")
        noisy = is_number(cv) and cv > noisy_cv
        loads = (r.get("loadavg_before"), r.get("loadavg_after"))
        load = " → ".join(f"{v:g}" if is_number(v) else "?" for v in loads) if noisy else ""
        mean = r.get("step_time_mean_s") if is_number(r.get("step_time_mean_s")) else r["step_time_median_s"]
        table.append(
            [
                config(r) + (f" (repeat {r['repeat']})" if r.get("repeat") else ""),
                ms(r.get("forward_s"), r.get("forward_std_s")),
                ms(r.get("backward_s"), r.get("backward_std_s")),
                ms(r.get("optimizer_s"), r.get("optimizer_std_s")),
                ms(mean, r.get("step_time_std_s")),
                *(disturbance(r) if noisy else ["", ""]),
                f"{cv:.1%}" if is_number(cv) else "",
                "noisy" if noisy else "",
                load,
            ]
        )
    flagged = sum(1 for t in table if t[8])
    intro = (
        f"## Forward / backward / optimizer\n\nMean per step ± std over the measured steps, in ms. {flagged} of "
        f"{len(table)} ok rows are flagged noisy (CV > {noisy_cv:.0%}); for those, whether others disturbed them: "
        "**foreign CPU**, the CPU time other processes took on the trial's CPUs during its measured steps per second "
        "of those steps, in % of one CPU (100% = one CPU busy with others the whole time; several CPUs can add up to "
        "more); **steal**, the seconds the hypervisor gave other guests in that window; and the 1-minute load average "
        "before and after the trial. A noisy row with foreign CPU and steal near zero is noisy by itself. ? marks a "
        "value not recorded (older rows, or /proc unreadable)."
    )
    columns = ["config", "forward ms", "backward ms", "optimizer ms", "step ms (mean ± std)"]
    # CV, flag and load stay last, where they were before foreign CPU and steal were recorded
    columns += ["foreign CPU (% of 1 CPU)", "steal s", "CV", "flag", "load"]
    return intro + "\n\n" + (md_table(columns, table) if table else "No ok rows.")


def projections(points: list[dict], tokens: float | None) -> str:
    """Per point, from its median step time over repeats."""
    columns = ["config", "median step s", f"{PROJECTION_STEPS:,} steps"]
    if tokens:
        columns += ["tokens/s", f"time for {tokens:,.0f} tokens"]
    table = []
    for p in (p for p in points if p["_ok"]):
        steps = seconds_and_duration(PROJECTION_STEPS * p["step_time_median_s"])
        line = [config(p), f"{p['step_time_median_s']:.4g}", steps]
        if tokens:
            tok = p.get("tokens_per_s")
            line += [f"{tok:,.0f}", seconds_and_duration(tokens / tok)] if is_positive(tok) else ["", ""]
        table.append(line)
    return f"## Projections\n\n{ASSUMPTIONS}\n\n" + (md_table(columns, table) if table else "No ok rows to project.")


def not_ok(rows: list[dict]) -> str:
    bad = [r for r in rows if not r["_ok"]]
    if not bad:
        return "## Trials that did not finish ok\n\nNone: every trial finished ok."
    table, multi_node = [], any(r.get("_node") for r in rows)
    for r in bad:
        reason = r.get("error") or ("ok but without a step time" if r.get("status") == "ok" else "no reason recorded")
        code = f" (exit code {r['exit_code']})" if r.get("exit_code") is not None else ""
        node = [r.get("_node")] if multi_node else []
        table.append([r.get("status"), r.get("study"), *node, point_text(r), str(reason)[:500] + code])
    title = f"## Trials that did not finish ok ({len(bad)})\n\n"
    return title + md_table(["status", "study", *(["node"] if multi_node else []), "point", "reason"], table)
