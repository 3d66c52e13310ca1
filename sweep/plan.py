"""Plans: a baseline config plus named studies, expanded into trials and validated as a whole.

    name: quick
    baseline: {depth: 4, width: 256, ...}
    studies:
      - name: width                      # unique within the plan
        axis: width                      # one axis ...
        values: [128, 256, 512]
      - name: width-x-threads
        axes: {width: [256, 1024], threads: [1, 2]}   # ... or a small grid (the product)

A plan's trials are exactly its studies' points; the baseline only supplies the other keys. Every
problem of a plan is collected before anything runs, each named with its study and key.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from trainables.config import FIELD_TYPES, ConfigError, TrialConfig, build_config
from trainables.launcher import unsupported_reason

PLANS_DIR = Path(__file__).resolve().parent / "plans"
PLAN_KEYS = {"name", "description", "baseline", "studies"}
STUDY_KEYS = {"name", "axis", "values", "axes", "description"}
MAX_GRID_AXES = 3


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


def resolve_plan_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    return PLANS_DIR / f"{name_or_path}.yaml"


def available_plans() -> list[str]:
    return sorted(p.stem for p in PLANS_DIR.glob("*.yaml"))


def load_plan(name_or_path: str, *, record_unsupported: bool = False, allowed_cpus: set[int] | None = None) -> Plan:
    path = resolve_plan_path(name_or_path)
    if not path.exists():
        raise PlanError(str(path), [f"no such plan file (shipped plans: {', '.join(available_plans())})"])
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise PlanError(str(path), [f"not valid YAML: {exc}"]) from None
    return expand_plan(document, str(path), record_unsupported=record_unsupported, allowed_cpus=allowed_cpus)


def _study_points(study: dict, where: str, problems: list[str]) -> list[dict]:
    if ("axis" in study) == ("axes" in study):
        problems.append(f"{where}: give either 'axis' with 'values', or 'axes'")
        return []
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
    document, source: str, *, record_unsupported: bool = False, allowed_cpus: set[int] | None = None
) -> Plan:
    problems: list[str] = []
    if not isinstance(document, dict):
        raise PlanError(source, ["a plan is a mapping with 'name', 'baseline' and 'studies'"])
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

    trials: list[Trial] = []
    seen: set[str] = set()
    for index, study in enumerate(studies):
        if not isinstance(study, dict) or not isinstance(study.get("name"), str):
            problems.append(f"study #{index + 1}: must be a mapping with a 'name'")
            continue
        where = f"study '{study['name']}'"
        if study["name"] in seen:
            problems.append(f"{where}: duplicate study name")
        seen.add(study["name"])
        for key in sorted(set(study) - STUDY_KEYS):
            problems.append(f"{where}: key '{key}': unknown (allowed: {', '.join(sorted(STUDY_KEYS))})")
        for point in _study_points(study, where, problems):
            values = {k: v for k, v in baseline.items() if k in FIELD_TYPES} | point
            label = " ".join(f"{k}={v}" for k, v in point.items())
            try:
                cfg = build_config(values)
            except ConfigError as exc:
                problems.append(f"{where}: point {label}: {exc}")
                continue
            if any(t.study == study["name"] and t.config_key == cfg.config_key() for t in trials):
                problems.append(f"{where}: point {label}: the same config as another point of this study")
                continue
            reason = unsupported_reason(cfg, allowed_cpus)
            if reason and not record_unsupported:
                problems.append(
                    f"{where}: point {label}: this machine cannot run it: {reason} (--record-unsupported records it instead)"
                )
            trials.append(Trial(study["name"], point, cfg, reason))
    if problems:
        raise PlanError(source, problems)
    return Plan(name, source, baseline, studies, trials, document.get("description", ""))
