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

This module checks the plan's own keys and turns each study's points into trials on this node; reading the
file is sweep/plan_document.py, one study's points sweep/plan_studies.py, what the result is sweep/plan_model.py.
The rest of the code takes all of these from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hwctl.cores import SYSFS_ROOT
from hwctl.housekeeping import trial_cpus
from sweep.budget import BUDGET_KEYS, budget_keys
from sweep.plan_document import available_plans, read_plan_document
from sweep.plan_model import CONTROL_STUDY, Plan, PlanError, Trial
from sweep.plan_studies import (
    STUDY_KEYS,
    UnknownRange,
    expand_machine_values,
    study_points,
    study_refinement,
    valid_reference,
)
from trainables.config import (
    FIELD_TYPES,
    MODEL_PRESETS,
    ConfigError,
    build_config,
    field_kind,
    format_assignments,
)
from trainables.launcher import unsupported_reason

__all__ = [
    "CONTROL_STUDY",
    "MAX_REPEATS",
    "ORDER_KEYS",
    "Plan",
    "PlanError",
    "Trial",
    "available_plans",
    "expand_plan",
    "load_plan",
    "read_plan_document",
]

PLAN_KEYS = {
    "name",
    "description",
    "baseline",
    "studies",
    "repeats",
    "order_seed",
    "control_every",
    "record_unsupported",
    *BUDGET_KEYS,
}
MAX_REPEATS = 20
# One control point per 10 trials costs at most about a tenth of the sweep (+1 at its start), and on the quick plan
# (~8 s a trial) re-measures the baseline every ~1.5 min, the time scale over which these VMs drift.
DEFAULT_CONTROL_EVERY = 10
# the plan keys of the sweep's order: key -> (default, lowest, highest or None, what is allowed)
ORDER_KEYS = {
    "repeats": (1, 1, MAX_REPEATS, f"an integer from 1 to {MAX_REPEATS}"),
    "order_seed": (0, 0, None, "an integer >= 0"),
    "control_every": (DEFAULT_CONTROL_EVERY, 0, None, "an integer >= 0 (0: no control points)"),
}


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
    budget = budget_keys(document, problems)
    # 'all' cores is the trials' CPUs: the node's less its housekeeping CPUs (hwctl/housekeeping.py)
    try:
        allowed = allowed_cpus if allowed_cpus is not None else trial_cpus()
    except ValueError as exc:  # a BENCH_HOUSEKEEPING_CPUS this node cannot set aside
        raise PlanError(source, [str(exc)]) from None
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
        **budget,
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
            expand_machine_values(study, self.allowed_cpus, self.sysfs_root)
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
        if "reference" in study and not valid_reference(study["reference"], where, self.problems):
            return
        if "refine" in study:
            refinement = study_refinement(study, self.baseline | overrides, where, self.problems)
            if refinement:
                self.refinements[study["name"]] = refinement
        for point in study_points(study, where, self.problems):
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
