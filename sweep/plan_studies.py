"""One study of a plan: its points (`axis` with `values`, a grid of `axes`, or listed `points`), with this
machine's value ranges ('1..all', 'min..max', 'available') filled in, and its `refine` and `reference` keys.

Each function appends the problems it finds, named with the study and key, to the plan's list; sweep/plan.py
turns the points into trials and raises them all at once.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from hwctl.control import Frequency, Governor
from trainables.config import FIELD_TYPES, is_numeric_key

STUDY_KEYS = {
    "name",
    "axis",
    "values",
    "axes",
    "points",
    "description",
    "skip_unsupported",
    "refine",
    "with",
    "reference",
}
# a study's `reference`: the figure another report claimed for this setting, shown beside ours in the report
REFERENCE_METRICS = ("step_time_s", "projected_10k_steps_s", "tokens_per_s", "mfu")
MAX_REFINE_POINTS = 50
MAX_GRID_AXES = 3


class UnknownRange(ValueError):
    """A typo in a value range is always an error, even in a study that may be skipped."""


def machine_values(axis: str, value_range: str, allowed_cpus: set[int], sysfs_root: Path) -> list:
    """Values that depend on the machine: '1..all' / 'pow2..all' cores, 'min..max' frequencies
    (0.4 GHz steps), 'available' governors. Raises ValueError with the reason when there are none."""
    count = len(allowed_cpus)
    if value_range == "1..all" and axis in ("cores", "threads"):
        return list(range(1, count + 1))
    if value_range == "pow2..all" and axis in ("cores", "threads"):
        return sorted({2**i for i in range(count.bit_length()) if 2**i < count} | {count})
    if value_range == "min..max" and axis == "freq_ghz":
        steps = Frequency(sysfs_root).steps_ghz()
        if not steps:
            raise ValueError(
                Frequency(sysfs_root).unavailable_reason() or "cpuinfo_min_freq/cpuinfo_max_freq not readable"
            )
        return steps
    if value_range == "available" and axis == "governor":
        governors = Governor(sysfs_root).available_values()
        if not governors:
            raise ValueError(Governor(sysfs_root).unavailable_reason() or "no scaling_available_governors")
        return governors
    raise UnknownRange(
        f"unknown value range {value_range!r} for {axis} "
        "(1..all and pow2..all for cores/threads, min..max for freq_ghz, available for governor)"
    )


def expand_machine_values(study: dict, allowed: set[int], sysfs_root: Path) -> None:
    """Replace string value ranges ('1..all', 'min..max', ...) by this machine's values, in place."""
    if isinstance(study.get("values"), str) and "axis" in study:
        study["values"] = machine_values(study["axis"], study["values"], allowed, sysfs_root)
    if isinstance(study.get("axes"), dict):
        study["axes"] = {
            axis: machine_values(axis, values, allowed, sysfs_root) if isinstance(values, str) else values
            for axis, values in study["axes"].items()
        }


def study_points(study: dict, where: str, problems: list[str]) -> list[dict]:
    """The study's points, each a mapping of the config keys it varies; none when its keys are wrong."""
    if sum(key in study for key in ("axis", "axes", "points")) != 1:
        problems.append(f"{where}: give one of 'axis' with 'values', 'axes', or 'points'")
        return []
    if "points" in study:
        return _listed_points(study["points"], where, problems)
    if "axis" in study:
        axes = {study["axis"]: study.get("values")}
        if "values" not in study:
            problems.append(f"{where}: key 'values': missing (the values of axis '{study['axis']}')")
            return []
    else:
        axes = study["axes"]
        if not isinstance(axes, dict) or not axes:
            problems.append(f"{where}: key 'axes': must map each axis to a list of values")
            return []
        if len(axes) > MAX_GRID_AXES:
            problems.append(f"{where}: key 'axes': {len(axes)} axes; a study grids at most {MAX_GRID_AXES}")
            return []
    return _product(axes, where, problems)


def _listed_points(points, where: str, problems: list[str]) -> list[dict]:
    """`points: [{}, {precision: bf16, optimizer: lamb}]`: each point a mapping of config keys ({} = the baseline),
    for a comparison a grid cannot express (all switches together against none)."""
    if not isinstance(points, list) or len(points) < 1 or not all(isinstance(p, dict) for p in points):
        problems.append(f"{where}: key 'points': must be a non-empty list of mappings of config keys")
        return []
    for point in points:
        for key in sorted(set(point) - set(FIELD_TYPES)):
            problems.append(f"{where}: key 'points': unknown key '{key}'")
    if len({json.dumps(p, sort_keys=True, default=str) for p in points}) != len(points):
        problems.append(f"{where}: key 'points': duplicate points")
    return [dict(p) for p in points] if not any(p.startswith(f"{where}: key 'points'") for p in problems) else []


def _product(axes: dict, where: str, problems: list[str]) -> list[dict]:
    ok = True
    for axis, values in axes.items():
        if axis not in FIELD_TYPES:
            problems.append(f"{where}: key '{axis}': unknown axis (known: {', '.join(FIELD_TYPES)})")
            ok = False
        elif not isinstance(values, list) or not values:
            problems.append(f"{where}: key '{axis}': values must be a non-empty list")
            ok = False
        elif len({str(v) for v in values}) != len(values):
            problems.append(f"{where}: key '{axis}': duplicate values {values}")
            ok = False
    if not ok:
        return []
    names = list(axes)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(axes[n] for n in names))]


def study_refinement(study: dict, baseline: dict, where: str, problems: list[str]) -> dict | None:
    """`refine: {points: N}` on a single numeric axis with at least two numeric grid values."""
    refine, axis = study["refine"], study.get("axis")
    points = refine.get("points") if isinstance(refine, dict) else None
    if not isinstance(points, int) or isinstance(points, bool) or not 1 <= points <= MAX_REFINE_POINTS:
        problems.append(f"{where}: key 'refine': must be {{points: N}} with 1 <= N <= {MAX_REFINE_POINTS}")
        return None
    if axis is None or not is_numeric_key(axis):
        problems.append(f"{where}: key 'refine': needs a single numeric 'axis' (not {axis or 'a grid'})")
        return None
    values = study.get("values")
    if not isinstance(values, list) or len([v for v in values if isinstance(v, int | float)]) < 2:
        problems.append(f"{where}: key 'refine': needs at least two numeric values to refine between")
        return None
    base = {k: v for k, v in baseline.items() if k in FIELD_TYPES and k != axis}
    return {"axis": axis, "points": points, "base": base}


def valid_reference(reference, where: str, problems: list[str]) -> bool:
    """`reference: {label: "the report: 8-core i5-1240P", step_time_s: 4.55, ...}`: a label and at least one
    positive figure among REFERENCE_METRICS (mfu as a fraction), plus an optional `note`."""
    known = ", ".join(REFERENCE_METRICS)
    if not isinstance(reference, dict) or not isinstance(reference.get("label"), str):
        problems.append(f"{where}: key 'reference': must be a mapping with a 'label' and figures among {known}")
        return False
    figures = {k: v for k, v in reference.items() if k not in ("label", "note")}
    for key, value in figures.items():
        if key not in REFERENCE_METRICS:
            problems.append(f"{where}: key 'reference': unknown figure {key!r} (known: {known})")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            problems.append(f"{where}: key 'reference': {key}={value!r} must be a positive number")
    if not figures:
        problems.append(f"{where}: key 'reference': give at least one figure among {known}")
    return not any(p.startswith(f"{where}: key 'reference'") for p in problems)
