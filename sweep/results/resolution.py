"""What a sweep could and could not resolve: each study's minimum detectable effect at 95% and the whole sweep's, and
for a budgeted sweep each ratio's racing decision (sweep/results/racing.py), in the terminal and in the report.

The minimum detectable effect of a ratio is the half-width of its 95% interval (the report's: paired by round with the
node's pooled variance, sweep/results/paired.py, where the rounds pair), symmetric in log space: a point further from its reference than that would have had an
interval that excludes 1.0. A study's is the median over its ratios, the sweep's the median over all of them. Ratios
with a side measured once are left out: a steps-only interval ignores between-trial variation and reads too narrow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sweep.results.racing import STOPPED, Decision, half_width, minimum_detectable_effect, node_pools, race
from sweep.results.rows import (
    clean_row,
    is_control,
    md_table,
    plan_order,
    point_rows,
    point_text,
    ratios_to_first,
    study_shape,
)

SWEEPS_DIR = "sweeps"  # sweep/manifest.py writes each sweep's manifest there; its "budget" holds δ and the rounds


@dataclass(frozen=True)
class RatioLine:
    node: str
    study: str
    point: str
    config_key: str
    ratio: float
    low: float | None
    high: float | None
    half_width: float | None  # None: a side measured once (steps only) or no interval
    repeats: int
    decision: Decision | None  # None: not a budgeted sweep


def ratio_lines(rows: list[dict], budget: dict | None) -> list[RatioLine]:
    """Every grid ratio of the sweep with its 95% interval, and its racing decision where the sweep had a budget."""
    grid = sorted(
        (clean_row(r) for r in rows if r.get("phase", "grid") == "grid" and not is_control(r)), key=plan_order
    )
    decisions = race(rows, first_round=budget["first_round"], delta=budget["delta"]) if budget else {}
    pools = node_pools(rows)
    lines = []
    for node in sorted({str(r.get("node") or "") for r in grid}):
        by_study: dict[str, list[dict]] = {}
        for r in grid:
            if str(r.get("node") or "") == node:
                by_study.setdefault(str(r.get("study")), []).append(r)
        for study, study_rows in by_study.items():
            points = study_shape(point_rows(study_rows))[-1]
            reference = next((p for p in points if p["_ok"]), None)
            for point, ratio in list(zip(points, ratios_to_first(points, pools), strict=True))[1:]:
                if ratio is None or not point["_ok"]:
                    continue
                once = min(len(point["_repeats"]), len(reference["_repeats"])) < 2
                width = None if once or ratio.steps_only else half_width(ratio.low, ratio.high)
                decision = decisions.get((node, study, point["config_key"]))
                lines.append(
                    RatioLine(
                        node, study, point_text(point), point["config_key"], ratio.value, ratio.low, ratio.high,
                        width, len(point["_repeats"]), decision,
                    )
                )  # fmt: skip
    return lines


def sweep_budget(root: Path, sweep_id: str) -> dict | None:
    """The budget state of a sweep's manifest (None: no budget, or no manifest beside the store)."""
    path = Path(root) / SWEEPS_DIR / f"{sweep_id}.json"
    try:
        return json.loads(path.read_text()).get("budget")
    except (OSError, ValueError):
        return None


def per_study(lines: list[RatioLine]) -> list[tuple[str, float | None, int]]:
    """(study, its minimum detectable effect, ratios with an interval) in the sweep's order."""
    studies = dict.fromkeys(line.study for line in lines)
    return [
        (study, minimum_detectable_effect([x.half_width for x in lines if x.study == study]),
         sum(x.half_width is not None for x in lines if x.study == study))
        for study in studies
    ]  # fmt: skip


def resolution_text(lines: list[RatioLine], budget: dict | None) -> str:
    """The terminal's lines: the sweep's and each study's minimum detectable effect, and the racing outcome."""
    if not lines:
        return "minimum detectable effect: no ratios (no study has two points measured)"
    overall = minimum_detectable_effect([x.half_width for x in lines])
    counted = sum(x.half_width is not None for x in lines)
    text = [
        f"minimum detectable effect at 95% (median interval half-width over {counted} of {len(lines)} ratios "
        f"with repeats on both sides): {percent(overall)}"
    ]
    text.append("  per study: " + ", ".join(f"{s} {percent(m)}" for s, m, n in per_study(lines) if n))
    if budget:
        text.append(racing_outcome(lines, budget))
    return "\n".join(text)


def racing_outcome(lines: list[RatioLine], budget: dict) -> str:
    decided = [x.decision for x in lines if x.decision is not None]
    counts: dict[str, int] = {}
    for d in decided:
        counts[d.verdict] = counts.get(d.verdict, 0) + 1
    spent, seconds = budget.get("spent_s") or 0.0, budget["seconds"]
    return (
        f"budget {seconds / 60:.1f} min: {spent / 60:.1f} min spent over {budget['rounds']} rounds, racing ended: "
        f"{STOPPED.get(budget.get('stopped'), 'interrupted')}; ratios at δ = ±{budget['delta']:.0%}: "
        + ", ".join(f"{n} {verdict}" for verdict, n in sorted(counts.items()))
    )


def resolution_markdown(lines: list[RatioLine], budget: dict | None) -> str:
    """The report's section: the same figures, then every ratio with its interval and, with a budget, its decision."""
    text = ["## What this sweep could resolve", ""]
    if not lines:
        return "\n".join(text + ["No study has two measured points: nothing to compare."])
    overall = minimum_detectable_effect([x.half_width for x in lines])
    text += [
        f"**Minimum detectable effect** (95%): {percent(overall)} over the sweep, the median half-width of the "
        "ratios' intervals (symmetric in log space): a point further than that from its reference would have read "
        "as an effect. Ratios with a side measured once are left out.",
        "",
        md_table(
            ["study", "minimum detectable effect", "ratios"], [(s, percent(m), n) for s, m, n in per_study(lines)]
        ),
    ]
    if budget:
        text += [
            "",
            racing_outcome(lines, budget) + ".",
            "",
            f"Racing (sweep/results/racing.py; a decision shows the interval that made it): after the first {budget['first_round']} rounds, each round re-measured "
            "the points whose ratio was undecided; a ratio is decided when its interval at that look (an "
            "alpha-spending confidence sequence, α_k = 5%/(k(k+1)), valid however often it looks) lies wholly outside "
            f"1 ± {budget['delta']:.0%} (faster, slower) or wholly inside it.",
        ]
    header = ["study", "point", "ratio (95% CI)", "half-width", "repeats"] + (["decision"] if budget else [])
    table = [
        [x.study, x.point, f"{x.ratio:.2f}x" + (f" ({x.low:.2f}–{x.high:.2f})" if x.low else ""),
         percent(x.half_width), x.repeats] + ([x.decision.text() if x.decision else "no decision"] if budget else [])
        for x in lines
    ]  # fmt: skip
    return "\n".join(text + ["", md_table(header, table)])


def percent(value: float | None) -> str:
    return "—" if value is None else f"±{value:.1%}"
