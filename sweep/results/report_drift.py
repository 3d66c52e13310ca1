"""The report's Drift section: the control point (the baseline re-measured through the sweep) per repeat in time order,
how far apart its repeats lie, and whether per-step noise explains that (`control_drift`, sweep/results/stats.py).
"""

from __future__ import annotations

from sweep.results.rows import interval_ms, md_table, ms, p_text, point_rows, step_times
from sweep.results.stats import RESAMPLES, Drift, control_drift, point_estimate


def drift_section(control: list[dict], nodes: list[str | None]) -> str:
    """The control point per repeat in time order, how far apart its repeats lie, and whether that is noise."""
    if not control:
        return (
            "## Drift\n\nNo control rows: this sweep did not re-measure its baseline, so how far the machine's speed "
            "drifted while it ran is not known."
        )
    parts = [
        "## Drift",
        "The control point is the baseline re-measured through the sweep: where its repeats differ by more than "
        "per-step noise, the machine itself changed speed, and points measured at different times differ by that "
        "much with no effect of their axis.",
    ]
    for node in nodes:
        for point in point_rows([r for r in control if r.get("_node") == node]):
            where = [f"on {node}"] if node else []
            parts.append(" ".join(["### Control", *where]) + "\n\n" + control_block(point))
    return "\n\n".join(parts)


def control_block(point: dict) -> str:
    """The control point's repeats in time order, each with its own (steps-only) interval, and the drift line."""
    repeats = point["_repeats"]
    if not repeats:
        return "No control repeat finished ok."
    estimate = point["_estimate"]
    summary = f"Median over {len(repeats)} repeat(s): {ms(estimate.median_s)} ms" + (
        f" (95% CI {interval_ms(estimate)} ms)." if estimate.low_s is not None else "."
    )
    table = []
    for i, r in enumerate(repeats):
        own = point_estimate([(r["step_time_median_s"], step_times(r))], f"control/{r.get('recorded_at')}/{i}")
        vs_first = r["step_time_median_s"] / repeats[0]["step_time_median_s"]
        table.append(
            [r.get("repeat") or 0, r.get("recorded_at"), ms(own.median_s), interval_ms(own), f"{vs_first:.2f}x"]
        )
    table = md_table(["repeat", "recorded", "median ms", "95% CI ms (its steps)", "vs first"], table)
    if len(repeats) < 2:
        return f"{summary}\n\n{table}\n\nOne control repeat: drift needs at least 2."
    drift = drift_sentence(control_drift([(r["step_time_median_s"], step_times(r)) for r in repeats]), len(repeats))
    return f"{summary}\n\n{table}\n\n{drift}"


def drift_sentence(drift: Drift, repeats: int) -> str:
    """Whether the control point moved during the sweep by more than per-step noise explains."""
    measured = f"the control's {repeats} repeats differ by {drift.spread:.2f}x (max/min"
    if drift.within_noise is None:
        return f"Drift not tested: {measured}); some repeats lack their per-step times, so the noise is not known."
    interval = f"; 95% CI {drift.low:.2f}–{drift.high:.2f}x)"
    test = (
        f"{p_text(drift.p_value)}: the share of {RESAMPLES} resamples, with every repeat drawn at one level, that "
        "spread this far"
    )
    if drift.within_noise:
        return f"**Drift within the noise**: {measured}{interval}, no more than per-step noise alone gives ({test})."
    return (
        f"**Drift beyond the noise**: {measured}{interval}, more than per-step noise alone gives ({test}). The "
        f"machine's speed changed during the sweep: points measured at different times can differ by up to "
        f"{drift.spread:.2f}x without any effect of the axis, and a point's interval holds that only as far as its "
        "own repeats were spread over the same time."
    )
