"""Plans: a baseline config plus named studies, expanded into trials and validated as a whole.

    name: quick
    baseline: {depth: 4, width: 256, ...}
    studies:
      - name: width                      # unique within the plan
        axis: width                      # one axis ...
        values: [128, 256, 512]
      - name: width-x-threads
        axes: {width: [256, 1024], threads: [1, 2]}   # ... or a small grid (the product)
        with: {depth: 6, batch_size: 4}  # optional: this study's points start from the baseline changed so
    repeats: 3            # each point runs 3 times (default 1) ...
    order_seed: 0         # ... in rounds shuffled with this seed (sweep/scheduler.py `sweep_order`)
    control_every: 10     # the baseline itself is re-measured every 10 trials of a node (0: never)

A plan's trials are exactly its studies' points; the baseline only supplies the other keys. Every
problem of a plan is collected before anything runs, each named with its study and key.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from hwctl.control import Frequency, Governor
from hwctl.cores import SYSFS_ROOT
from sweep.results.tables import format_table
from trainables.config import (
    FIELD_TYPES,
    MODEL_PRESETS,
    ConfigError,
    TrialConfig,
    build_config,
    field_kind,
    format_assignments,
    is_numeric_key,
)
from trainables.launcher import unsupported_reason

PLANS_DIR = Path(__file__).resolve().parent / "plans"
PLAN_KEYS = {
    "name",
    "description",
    "baseline",
    "studies",
    "repeats",
    "order_seed",
    "control_every",
    "record_unsupported",
}
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
MAX_REPEATS = 20
CONTROL_STUDY = "control"  # the study (and phase) of the control points: a plan's study may not take the name
# One control point per 10 trials costs at most about a tenth of the sweep (+1 at its start), and on the quick plan
# (~8 s a trial) re-measures the baseline every ~1.5 min, the time scale over which these VMs drift.
DEFAULT_CONTROL_EVERY = 10
# the plan keys of the sweep's order: key -> (default, lowest, highest or None, what is allowed)
ORDER_KEYS = {
    "repeats": (1, 1, MAX_REPEATS, f"an integer from 1 to {MAX_REPEATS}"),
    "order_seed": (0, 0, None, "an integer >= 0"),
    "control_every": (DEFAULT_CONTROL_EVERY, 0, None, "an integer >= 0 (0: no control points)"),
}


class PlanError(ValueError):
    """A plan that cannot run; `problems` lists every problem found, each naming its study and key."""

    def __init__(self, source: str, problems: list[str]):
        self.problems = problems
        super().__init__(f"plan {source}: {len(problems)} problem(s)\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class Trial:
    study: str
    point: dict  # the keys this study varies, with this trial's values
    config: TrialConfig
    unsupported: str | None = None  # why this node cannot honour it (recorded, not run)
    reference: dict | None = None  # the study's reference figure (plan key `reference`), carried into its rows

    @property
    def config_key(self) -> str:
        return self.config.config_key()

    @property
    def identity(self) -> str:
        return f"{self.study}/{self.config_key}"


@dataclass
class Plan:
    name: str
    source: str
    baseline: dict
    studies: list[dict]
    trials: list[Trial] = field(default_factory=list)
    description: str = ""
    skipped: list[str] = field(default_factory=list)  # studies or points this machine cannot run (skip_unsupported)
    refinements: dict[str, dict] = field(default_factory=dict)  # study -> {"axis", "points", "base"} for Optuna
    repeats: int = 1  # how many times each point runs
    order_seed: int = 0  # seeds the shuffle of each round of repeats
    control_every: int = 0  # a control point (the baseline re-measured) every this many trials of a node; 0: none
    control: Trial | None = None  # the control point: the baseline as a trial of study 'control' (None: none here)


def resolve_plan_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    return PLANS_DIR / f"{name_or_path}.yaml"


def available_plans() -> list[str]:
    return sorted(p.stem for p in PLANS_DIR.glob("*.yaml"))


def load_plan(
    name_or_path: str,
    *,
    record_unsupported: bool = False,
    allowed_cpus: set[int] | None = None,
    sysfs_root: Path = SYSFS_ROOT,
) -> Plan:
    document, source = read_plan_document(name_or_path)
    return expand_plan(
        document, source, record_unsupported=record_unsupported, allowed_cpus=allowed_cpus, sysfs_root=sysfs_root
    )


# A plan is a few kB (the full plan: 3 kB). A larger file is the wrong path (a log, a Parquet file): refused
# unread. 1 MiB also bounds the YAML scan below to well under a second.
MAX_PLAN_BYTES = 2**20
# safe_load builds an alias as a shared reference, so nine levels of nine aliases (a "billion laughs") load in
# a millisecond and then cost minutes and GBs in whatever walks the document: str() of a config value,
# json.dumps into the manifest. So the event stream is scanned first, nothing built: its nodes counted with
# every alias expanded, and its nesting (PyYAML composes recursively: 10,000 '[' would be a RecursionError).
MAX_PLAN_NODES = 100_000
MAX_PLAN_DEPTH = 50


def read_plan_document(name_or_path: str) -> tuple[dict, str]:
    """The plan's YAML as a mapping, and where it came from; each node of a sweep expands it itself.
    A file that cannot be a plan (too large, not UTF-8, not YAML, an alias bomb) is a PlanError saying why."""
    path = resolve_plan_path(name_or_path)
    if not path.exists():
        raise PlanError(str(path), [f"no such plan file (shipped plans: {', '.join(available_plans())})"])
    if not path.is_file():
        raise PlanError(str(path), ["not a regular file"])
    try:
        with path.open("rb") as plan_file:
            data = plan_file.read(MAX_PLAN_BYTES + 1)
    except OSError as exc:
        raise PlanError(str(path), [f"cannot be read: {exc.strerror}"]) from None
    if len(data) > MAX_PLAN_BYTES:
        raise PlanError(str(path), ["larger than 1 MiB: a plan is a few kB of YAML (is this the right file?)"])
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PlanError(str(path), [f"not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start}"]) from None
    try:
        problem = _yaml_size_problem(text)
        if problem:
            raise PlanError(str(path), [problem])
        return yaml.safe_load(text), str(path)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        if getattr(exc, "problem", None) and where is not None:
            reason = f"{exc.problem} at line {where.line + 1}, column {where.column + 1}"
        else:
            reason = " ".join(str(exc).split())
        raise PlanError(str(path), [f"not valid YAML: {reason}"]) from None


def _yaml_size_problem(text: str) -> str | None:
    """Why the YAML is too large once its aliases are expanded, or nested too deeply; None when it is not."""
    expanded: dict[str, int] = {}  # anchor -> nodes of its value, aliases inside expanded
    open_nodes: list[list] = []  # [anchor, nodes so far] of each mapping or sequence not yet closed
    total = 0
    for event in yaml.parse(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
        if isinstance(event, yaml.CollectionStartEvent):
            open_nodes.append([event.anchor, 1])
            if len(open_nodes) > MAX_PLAN_DEPTH:
                return f"nested deeper than {MAX_PLAN_DEPTH} levels: a plan needs five"
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            anchor, nodes = open_nodes.pop()
        elif isinstance(event, yaml.AliasEvent):
            anchor, nodes = None, expanded.get(event.anchor, 1)  # an unknown alias: safe_load names it
        elif isinstance(event, yaml.ScalarEvent):
            anchor, nodes = event.anchor, 1
        else:
            continue
        if anchor:
            expanded[anchor] = nodes
        if open_nodes:
            open_nodes[-1][1] += nodes
            count = open_nodes[-1][1]
        else:
            total += nodes
            count = total
        if count > MAX_PLAN_NODES:
            return (
                f"more than {MAX_PLAN_NODES:,} YAML values with its aliases expanded (an alias bomb?): "
                "a plan has a few hundred"
            )
    return None


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


def _study_points(study: dict, where: str, problems: list[str]) -> list[dict]:
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


def expand_plan(
    document,
    source: str,
    *,
    record_unsupported: bool = False,
    allowed_cpus: set[int] | None = None,
    sysfs_root: Path = SYSFS_ROOT,
) -> Plan:
    if not isinstance(document, dict):
        raise PlanError(source, ["a plan is a mapping with 'name', 'baseline' and 'studies'"])
    problems: list[str] = []
    name, baseline, studies = _plan_keys(document, problems)
    order = order_keys(document, problems)
    allowed = allowed_cpus if allowed_cpus is not None else set(os.sched_getaffinity(0))
    # a plan may ask for it itself: points a node cannot hold (a model too large) are then rows that say why
    if not isinstance(document.get("record_unsupported", False), bool):
        problems.append("plan: key 'record_unsupported': must be true or false")
    record_unsupported = record_unsupported or document.get("record_unsupported") is True
    expansion = _Expansion(baseline, allowed, sysfs_root, record_unsupported, problems)
    for index, study in enumerate(studies):
        expansion.add_study(index, study)
    control = expansion.control_trial() if order["control_every"] else None
    if problems:
        raise PlanError(source, problems)
    return Plan(
        name,
        source,
        baseline,
        studies,
        trials=expansion.trials,
        description=document.get("description", ""),
        skipped=expansion.skipped,
        refinements=expansion.refinements,
        control=control,
        **order,
    )


def _plan_keys(document: dict, problems: list[str]) -> tuple[str, dict, list]:
    """The plan's name, baseline and studies; a baseline or studies of the wrong type count as empty."""
    for key in sorted(set(document) - PLAN_KEYS):
        problems.append(f"plan: key '{key}': unknown (allowed: {', '.join(sorted(PLAN_KEYS))})")
    name = document.get("name")
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        problems.append(f"plan: key 'name': {name!r} must be a word of letters, digits, '-' or '_'")
    baseline = document.get("baseline") or {}
    if not isinstance(baseline, dict):
        problems.append("plan: key 'baseline': must be a mapping of config keys")
        baseline = {}
    for key in sorted(set(baseline) - set(FIELD_TYPES)):
        problems.append(f"baseline: key '{key}': unknown key")
    studies = document.get("studies")
    if not isinstance(studies, list) or not studies:
        problems.append("plan: key 'studies': must be a non-empty list")
        studies = []
    return name, baseline, studies


def order_keys(document: dict, problems: list[str]) -> dict:
    """`repeats`, `order_seed` and `control_every` of the plan, with their defaults; a bad value is a problem."""
    order = {}
    for key, (default, low, high, allowed) in ORDER_KEYS.items():
        value = document.get(key, default)
        if not _int_within(value, low, high):
            problems.append(f"plan: key '{key}': {value!r} must be {allowed}")
            value = default
        order[key] = value
    return order


def _int_within(value, low: int, high: int | None) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value and (high is None or value <= high)


@dataclass
class _Expansion:
    """A plan's trials, skipped points and refinements, collected study by study with every problem found."""

    baseline: dict
    allowed_cpus: set[int]
    sysfs_root: Path
    record_unsupported: bool
    problems: list[str]
    trials: list[Trial] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    refinements: dict[str, dict] = field(default_factory=dict)
    study_names: set[str] = field(default_factory=set)

    def add_study(self, index: int, study) -> None:
        if not isinstance(study, dict) or not isinstance(study.get("name"), str):
            self.problems.append(f"study #{index + 1}: must be a mapping with a 'name'")
            return
        where = f"study '{study['name']}'"
        if study["name"] == CONTROL_STUDY:
            self.problems.append(
                f"{where}: the name '{CONTROL_STUDY}' is reserved for the sweep's control points (control_every): "
                "give the study another name"
            )
        if study["name"] in self.study_names:
            self.problems.append(f"{where}: duplicate study name")
        self.study_names.add(study["name"])
        for key in sorted(set(study) - STUDY_KEYS):
            self.problems.append(f"{where}: key '{key}': unknown (allowed: {', '.join(sorted(STUDY_KEYS))})")
        study = dict(study)
        try:
            _expand_machine_values(study, self.allowed_cpus, self.sysfs_root)
        except ValueError as exc:
            if study.get("skip_unsupported") and not isinstance(exc, UnknownRange):
                self.skipped.append(f"{where}: skipped: {exc}")
            else:
                self.problems.append(f"{where}: {exc}")
            return
        overrides = study.get("with", {})
        if not isinstance(overrides, dict) or set(overrides) - set(FIELD_TYPES):
            self.problems.append(
                f"{where}: key 'with': must map config keys to values (known: {', '.join(FIELD_TYPES)})"
            )
            return
        if "reference" in study and not _valid_reference(study["reference"], where, self.problems):
            return
        if "refine" in study:
            refinement = _refinement(study, self.baseline | overrides, where, self.problems)
            if refinement:
                self.refinements[study["name"]] = refinement
        for point in _study_points(study, where, self.problems):
            self.add_point(study, point, where)

    def add_point(self, study: dict, point: dict, where: str) -> None:
        label = format_assignments(point)
        try:
            start = {k: v for k, v in self.baseline.items() if k in FIELD_TYPES} | study.get("with", {})
            if point.get("model") in MODEL_PRESETS:  # the point's preset sets its size, whatever the baseline's
                start = {k: v for k, v in start.items() if k not in MODEL_PRESETS[point["model"]]}
            cfg = build_config(start | point)
        except ConfigError as exc:
            self.problems.append(f"{where}: point {label}: {exc}")
            return
        # YAML reads `fusion: off` as False: the point (its label, its rows' `point`) says what the config means
        point = {k: getattr(cfg, k) if isinstance(v, bool) and field_kind(k) == "str" else v for k, v in point.items()}
        label = format_assignments(point)
        if any(t.study == study["name"] and t.config_key == cfg.config_key() for t in self.trials):
            self.problems.append(f"{where}: point {label}: the same config as another point of this study")
            return
        reason = unsupported_reason(cfg, self.allowed_cpus, self.sysfs_root)
        if reason and study.get("skip_unsupported"):
            self.skipped.append(f"{where}: point {label} skipped: {reason}")
            return
        if reason and not self.record_unsupported:
            self.problems.append(
                f"{where}: point {label}: this machine cannot run it: {reason} "
                "(--record-unsupported records it instead)"
            )
        self.trials.append(Trial(study["name"], point, cfg, reason, study.get("reference")))

    def control_trial(self) -> Trial | None:
        """The baseline with nothing varied, re-measured through the sweep to show drift (None: cannot run here)."""
        try:
            cfg = build_config({k: v for k, v in self.baseline.items() if k in FIELD_TYPES})
        except ConfigError as exc:
            self.problems.append(
                f"plan: key 'control_every': the control point is the baseline, which is not a valid config: {exc} "
                "(fix the baseline, or set control_every: 0)"
            )
            return None
        reason = unsupported_reason(cfg, self.allowed_cpus, self.sysfs_root)
        if reason:
            self.skipped.append(f"control points skipped: the baseline cannot run here: {reason}")
            return None
        return Trial(CONTROL_STUDY, {}, cfg)


def _refinement(study: dict, baseline: dict, where: str, problems: list[str]) -> dict | None:
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


def _expand_machine_values(study: dict, allowed: set[int], sysfs_root: Path) -> None:
    """Replace string value ranges ('1..all', 'min..max', ...) by this machine's values, in place."""
    if isinstance(study.get("values"), str) and "axis" in study:
        study["values"] = machine_values(study["axis"], study["values"], allowed, sysfs_root)
    if isinstance(study.get("axes"), dict):
        study["axes"] = {
            axis: machine_values(axis, values, allowed, sysfs_root) if isinstance(values, str) else values
            for axis, values in study["axes"].items()
        }


def plan_table(plan: Plan) -> str:
    """The plan's trials as a terminal table, then what this machine skips."""
    rows = [
        (i + 1, t.study, format_assignments(t.point), t.config_key, t.unsupported or "")
        for i, t in enumerate(plan.trials)
    ]
    studies = len({t.study for t in plan.trials})
    text = f"plan {plan.name} ({plan.source}): {len(plan.trials)} trials in {studies} studies\n"
    control = f"(the baseline, study {CONTROL_STUDY})" if plan.control else "(no control points here)"
    text += f"repeats {plan.repeats}, order_seed {plan.order_seed}, control_every {plan.control_every} {control}\n"
    text += format_table(["#", "study", "point", "config_key", "unsupported"], rows)
    if plan.skipped:
        text += "\nskipped on this machine (skip_unsupported):\n" + "\n".join(f"  - {s}" for s in plan.skipped)
    return text


def _valid_reference(reference, where: str, problems: list[str]) -> bool:
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
