"""The report's first section: what the sweep found, so a reader has the answer on the first screen.

In order: every ratio whose 95% interval excludes 1.0, ranked by size (settings first: the model-size axes change
the work per step, so their effects are expected and listed apart), as a table and a forest plot; the axes with no
effect larger than the sweep could see, with that size; the fastest setting measured against the baseline, with its
`bench.py trial` command; the drift verdict. The ratios are the ones every other section uses
(sweep/results/resolution.py: paired by round, sweep/results/paired.py), so the first screen and the study sections
agree. A ratio with a side measured once has a steps-only interval that ignores between-trial variation: such ratios
are never listed as findings, only counted, with the reason.
"""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path

from sweep.results.forest_plot import plot_forest
from sweep.results.racing import minimum_detectable_effect
from sweep.results.report_drift import drift_sentence
from sweep.results.resolution import RatioLine, percent
from sweep.results.rows import clean_row, md_table, point_rows, step_times
from sweep.results.stats import control_drift
from trainables.config import TrialConfig, format_assignments

# Axes that change the work of a step (FLOPs, bytes, tokens): their ratios say how the cost scales, not which
# setting to use, so they are ranked apart from the settings (system, framework, hardware, precision, ...).
MODEL_SIZE_KEYS = frozenset(
    {"depth", "width", "heads", "head_dim", "kv_heads", "mlp_ratio", "seq_len", "batch_size", "grad_accum",
     "vocab_size", "model", "window", "freeze_layers"}
)  # fmt: skip
FIRST_SCREEN = 8
PLAN_AUTOS = (
    "warmup_steps",
    "measure_steps",
    "measure_seconds",
    "dataset",
)  # autos a plan sets: part of the command  # findings in the first table and plot; the rest follow in the model-size table


def is_effect(line: RatioLine) -> bool:
    """An interval from repeats on both sides that lies wholly on one side of 1.0."""
    return line.half_width is not None and line.low is not None and (line.high < 1.0 or line.low > 1.0)


def is_model_size(line: RatioLine, study_axes: dict[str, set[str]]) -> bool:
    axes = study_axes.get(line.study) or set()
    return bool(axes) and axes <= MODEL_SIZE_KEYS


def axes_by_study(rows) -> dict[str, set[str]]:
    """Each study's varied keys, from its cleaned rows' points."""
    axes: dict[str, set[str]] = {}
    for r in rows:
        axes.setdefault(str(r.get("study")), set()).update(r.get("_point") or {})
    return axes


def by_size(lines) -> list[RatioLine]:
    """Largest effect first, faster and slower alike: |log ratio|."""
    return sorted(lines, key=lambda x: -abs(math.log(x.ratio)))


def change_text(ratio: float) -> str:
    """0.54 -> 'step time −46%', 1.17 -> 'step time +17%'."""
    return f"step time {'−' if ratio < 1 else '+'}{abs(ratio - 1):.0%}"


def findings_section(lines: list[RatioLine], rows: list[dict], control: list[dict], out: Path) -> str:
    """The Findings section for a sweep's ratio lines, its ok rows (for the fastest config's command) and control rows."""
    study_axes = axes_by_study(rows)
    several_nodes = len({x.node for x in lines}) > 1
    effects = by_size(x for x in lines if is_effect(x))
    settings = [x for x in effects if not is_model_size(x, study_axes)]
    sizes = [x for x in effects if is_model_size(x, study_axes)]
    text = ["## Findings", ""]
    if not lines:
        return "\n".join(text + ["No study has two measured points: nothing to compare.", drift_line(control)])
    text += [
        f"**{len(settings)} setting(s) changed the step time** beyond the 95% interval "
        f"({len(sizes)} more ratios are model-size axes, whose work per step differs; "
        f"{sum(x.half_width is not None for x in lines)} ratios had repeats on both sides).",
        "",
    ]
    if settings:
        shown = settings[:FIRST_SCREEN]
        text += [effects_table(shown, several_nodes), "", forest(out, "findings.png", "settings", shown), ""]
        if len(settings) > FIRST_SCREEN:
            text += [effects_table(settings[FIRST_SCREEN:], several_nodes), ""]
    text += [fastest_text(lines, rows, study_axes), "", drift_line(control), ""]
    text += no_effect_part(lines)
    if sizes:
        text += ["", "### Model-size axes", "", effects_table(sizes, several_nodes), ""]
        text += [forest(out, "findings-model-size.png", "model-size axes", sizes[:30])]
    once = [x for x in lines if x.half_width is None and x.low is not None and (x.high < 1.0 or x.low > 1.0)]
    if once:
        text += [
            "",
            f"{len(once)} more ratio(s) have an interval that excludes 1.0 but a side measured once: a steps-only "
            "interval ignores how whole trials shift level, so they are not listed as findings (run with "
            "--repeats 2 or more).",
        ]
    return "\n".join(text)


def findings_text(lines: list[RatioLine], rows: list[dict]) -> str:
    """The terminal's lines: the settings whose interval excludes 1.0, largest first (the report has the rest)."""
    study_axes = axes_by_study(map(clean_row, rows))
    effects = by_size(x for x in lines if is_effect(x) and not is_model_size(x, study_axes))
    if not effects:
        return "findings: no setting changed the step time beyond its 95% interval"
    shown = ", ".join(f"{x.point} {x.ratio:.2f}x ({x.low:.2f}–{x.high:.2f})" for x in effects[:FIRST_SCREEN])
    more = f" and {len(effects) - FIRST_SCREEN} more" if len(effects) > FIRST_SCREEN else ""
    return f"findings (settings beyond their 95% interval, largest first): {shown}{more}"


def effects_table(effects: list[RatioLine], several_nodes: bool) -> str:
    header = ["#", "study", "point", "ratio (95% CI)", "change", "repeats"] + (["node"] if several_nodes else [])
    table = [
        [i + 1, x.study, x.point, f"{x.ratio:.2f}x ({x.low:.2f}–{x.high:.2f})", change_text(x.ratio), x.repeats]
        + ([x.node] if several_nodes else [])
        for i, x in enumerate(effects)
    ]
    return md_table(header, table)


def forest(out: Path, name: str, title: str, effects: list[RatioLine]) -> str:
    labels = [x.point if x.point.startswith(f"{x.study}=") else f"{x.study}: {x.point}" for x in effects]
    plot_forest(
        out / name, title, labels, [x.ratio for x in effects], [x.low for x in effects], [x.high for x in effects]
    )
    return f"![forest plot: {title}]({name})"


def no_effect_part(lines: list[RatioLine]) -> list[str]:
    """Per study, its ratios whose interval includes 1.0 and the largest effect those intervals leave room for."""
    quiet = [x for x in lines if x.half_width is not None and not is_effect(x)]
    if not any(x.half_width is not None for x in lines):
        return ["No ratio has repeats on both sides: what is inside the noise cannot be told (run with --repeats 2)."]
    if not quiet:
        return ["No ratio with repeats on both sides was inside the noise: every measured axis had an effect."]
    table = []
    for study in dict.fromkeys(x.study for x in quiet):
        members = [x for x in quiet if x.study == study]
        room = max(max(x.high - 1.0, 1.0 - x.low) for x in members)  # the interval's far side, either way
        decided = [x for x in members if x.decision is not None and x.decision.decided]
        mde = minimum_detectable_effect([x.half_width for x in lines if x.study == study])
        table.append(
            [study, ", ".join(x.point for x in members), f"±{room:.0%}", percent(mde)]
            + ([f"{len(decided)} by racing" if decided else "interval"] if any(x.decision for x in lines) else [])
        )
    header = ["study", "points with no measurable effect", "no effect larger than", "study's detectable effect"]
    header += ["decided"] if any(x.decision for x in lines) else []
    return [
        "### No measurable effect",
        "",
        "These points' intervals include 1.0: their effect, if any, is smaller than the size shown (the far side of "
        "the widest interval), and smaller effects than the study's detectable effect (its median half-width) "
        "could not be seen.",
        "",
        md_table(header, table),
    ]


def fastest_text(lines: list[RatioLine], rows: list[dict], study_axes: dict[str, set[str]]) -> str:
    """The setting with the lowest ratio to its reference (the baseline's model, other settings), and its command."""
    settings = [x for x in lines if not is_model_size(x, study_axes)]
    if settings and all(x.half_width is None for x in settings):
        return (
            "**Fastest setting**: not named: every setting's ratio has a side measured once, so none can be told "
            "from the noise (run with --repeats 2 or more)."
        )
    candidates = [x for x in settings if x.half_width is not None and x.ratio < 1.0]
    if not candidates:
        return "**Fastest setting**: no setting measured faster than its study's reference."
    best = min(candidates, key=lambda x: x.ratio)
    row = next((r for r in rows if r.get("config_key") == best.config_key), None)
    verdict = "a measured speed-up" if is_effect(best) else "inside the noise: no setting measurably beat the baseline"
    interval = f" ({best.low:.2f}–{best.high:.2f})" if best.low is not None else ""
    text = (
        f"**Fastest setting**: `{best.point}` ({best.study}) at {best.ratio:.2f}x{interval} the reference, {verdict}."
    )
    return text + (f" Run it again:\n\n    {trial_command(row)}" if row else "")


def trial_command(row: dict) -> str:
    """`python bench.py trial ...`: the point's own keys, every key whose value differs from TrialConfig's default,
    and the measuring keys and dataset the plan set; other autos are left to resolve the same way again."""
    keys = dict(row.get("_point") or {})
    for f in fields(TrialConfig):
        value = row.get(f.name)
        if value is None or f.name in keys or (f.default is None and f.name not in PLAN_AUTOS) or value == f.default:
            continue
        keys[f.name] = int(value) if isinstance(value, float) and value.is_integer() else value
    return f"python bench.py trial {format_assignments(keys)}"


def drift_line(control: list[dict]) -> str:
    """The drift verdict of the first node's control point (the Drift section has every node's)."""
    points = point_rows(control)
    repeats = points[0]["_repeats"] if points else []
    if len(repeats) < 2:
        return "**Drift**: not measured (fewer than 2 control repeats); see the Drift section."
    drift = control_drift([(r["step_time_median_s"], step_times(r)) for r in repeats])
    return drift_sentence(drift, len(repeats)).split(" The machine's speed")[0]
