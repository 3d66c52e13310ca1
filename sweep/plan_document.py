"""Reading a plan file: a shipped plan's name or a YAML path to its document, refusing what cannot be a plan.

A file too large, not UTF-8, not YAML, or an alias bomb is a PlanError saying why, before anything walks it.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from sweep.plan_model import PlanError

PLANS_DIR = Path(__file__).resolve().parent / "plans"
# A plan is a few kB (the full plan: 3 kB). A larger file is the wrong path (a log, a Parquet file): refused
# unread. 1 MiB also bounds the YAML scan below to well under a second.
MAX_PLAN_BYTES = 2**20
# safe_load builds an alias as a shared reference, so nine levels of nine aliases (a "billion laughs") load in
# a millisecond and then cost minutes and GBs in whatever walks the document: str() of a config value,
# json.dumps into the manifest. So the event stream is scanned first, nothing built: its nodes counted with
# every alias expanded, and its nesting (PyYAML composes recursively: 10,000 '[' would be a RecursionError).
MAX_PLAN_NODES = 100_000
MAX_PLAN_DEPTH = 50


def resolve_plan_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    return PLANS_DIR / f"{name_or_path}.yaml"


def available_plans() -> list[str]:
    return sorted(p.stem for p in PLANS_DIR.glob("*.yaml"))


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
