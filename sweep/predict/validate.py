"""How well the model predicts configs it has not seen: `bench.py predict --validate`.

- Leave one config out: on each node, for each framework x precision, every config_key in turn is held out with all
  its rows, the efficiencies are fitted on the rest of that node's configs of its framework x precision, and the
  held-out config predicted (model.leave_one_config_out). A held-out config the rest does not cover (a compile or
  attention backend no other config ran, work beyond 10x of the rest) is refused, as `bench.py predict` would refuse
  it, and counted apart.
- Two cross checks stand in for a second host on one machine, each fitted on one side and predicting the other with
  nothing but the other side's measured roofs:
  - ISA cap: fit on the configs without an `isa` cap, predict every isa-capped config (avx2 among them) from the matmul
    peak measured under its cap, at the trial's threads (a bf16 config whose bf16 is not native under its cap has no
    roof: left out);
  - core count: fit on the configs run at 1 thread, predict the same configs (the same work and kernels) run at 2
    threads, from the 2-thread peak and bandwidth.
Errors are |predicted - measured| / measured of each config's median step time; the figures are their median and
90th percentile, per node and over every node.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sweep.predict.fit import Point, StorePoints, fit_points, relative_error
from sweep.predict.model import Held, coverage_problem, group_name, leave_one_config_out

CORES_FITTED, CORES_PREDICTED = 1, 2


@dataclass
class Check:
    """One check's held-out predictions per node, and why a node had none."""

    name: str
    description: str
    held: dict[str, list[Held]] = field(default_factory=dict)  # node -> its held-out configs
    notes: list[str] = field(default_factory=list)  # where the check had nothing to predict, and why

    def errors(self, node: str | None = None) -> list[float]:
        nodes = [node] if node else list(self.held)
        return [
            relative_error(h.predicted_s, h.point.measured_s)
            for n in nodes
            for h in self.held.get(n, [])
            if h.predicted_s is not None
        ]

    def refused(self, node: str | None = None) -> list[Held]:
        nodes = [node] if node else list(self.held)
        return [h for n in nodes for h in self.held.get(n, []) if h.predicted_s is None]


def summary(errors: list[float]) -> dict:
    """{'configs': n, 'median': ..., 'p90': ...} of absolute relative errors (None without any)."""
    if not errors:
        return {"configs": 0, "median": None, "p90": None}
    return {"configs": len(errors), "median": float(np.median(errors)), "p90": float(np.quantile(errors, 0.9))}


def _groups(points: list[Point]) -> dict[tuple[str, str], list[Point]]:
    groups: dict[tuple[str, str], list[Point]] = {}
    for p in points:
        groups.setdefault(p.group, []).append(p)
    return dict(sorted(groups.items()))


def leave_one_out_check(store: StorePoints) -> Check:
    check = Check(
        "leave one config out",
        "each config_key held out with all its rows, predicted from a fit on the rest of its node's framework x "
        "precision",
    )
    for node, points in store.points.items():
        check.held[node] = []
        for group, members in _groups(points).items():
            check.held[node] += leave_one_config_out(members, f"of {group_name(group)} on {node}")
        if not points:
            check.notes.append(f"{node}: no ok row to hold out")
    return check


def _cross(check: Check, store: StorePoints, fitted, predicted, twins: bool) -> Check:
    """Fit on the points `fitted` selects, predict those `predicted` selects (twins: only those whose work and
    kernels equal a fitted point's), per node and framework x precision."""
    for node, points in store.points.items():
        held: list[Held] = []
        for group, members in _groups(points).items():
            train = [p for p in members if fitted(p)]
            test = [p for p in members if predicted(p)]
            if twins:
                test = [p for p in test if any(identity(p) == identity(q) for q in train)]
            if not test:
                continue
            where = f"of {group_name(group)} on {node} ({check.name}: fitted side)"
            if not train:
                held += [Held(p, None, f"no config on the fitted side {where}") for p in test]
                continue
            fit = fit_points(train)
            for p in test:
                problem = coverage_problem(p.cfg, p.work, train, where)
                held.append(Held(p, None if problem else fit.predict(p.features), problem))
        if held:
            check.held[node] = held
        else:
            check.notes.append(f"{node}: no config to predict")
    if not check.held:
        check.notes.insert(0, f"no rows for this check in the store: {check.description}")
    return check


def identity(point: Point) -> str:
    """A config's key without its thread and core counts and its timing protocol (how many steps were timed): the
    same config at another core count."""
    protocol = {"warmup_steps": None, "measure_steps": None, "measure_seconds": None}
    return point.cfg.replace(threads=None, cores=None, core_list=None, **protocol).config_key()


def isa_check(store: StorePoints) -> Check:
    check = Check(
        "ISA cap",
        "fit on the configs without an isa cap, predict every isa-capped config (avx2 among them) from the matmul "
        "peak measured under its cap",
    )
    return _cross(check, store, lambda p: p.cfg.isa is None, lambda p: p.cfg.isa is not None, twins=False)


def cores_check(store: StorePoints) -> Check:
    check = Check(
        "core count",
        f"fit on the configs run at {CORES_FITTED} thread, predict the same configs run at {CORES_PREDICTED} "
        "threads from that thread count's peak and bandwidth",
    )
    return _cross(
        check,
        store,
        lambda p: p.threads == CORES_FITTED,
        lambda p: p.threads == CORES_PREDICTED,
        twins=True,
    )


def validate(store: StorePoints) -> list[Check]:
    return [leave_one_out_check(store), isa_check(store), cores_check(store)]


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def check_lines(check: Check) -> list[str]:
    """A check as text: per node and overall, the count, median and p90, the refusals and the notes."""
    lines = [f"{check.name}: {check.description}"]
    for node in check.held:
        s = summary(check.errors(node))
        refused = check.refused(node)
        line = f"  {node}: {s['configs']} configs predicted, median {percent(s['median'])}, p90 {percent(s['p90'])}"
        lines.append(line + (f"; {len(refused)} refused" if refused else ""))
        reasons: dict[str, int] = {}
        for h in refused:
            reason = h.refused.split(":")[0]
            reasons[reason] = reasons.get(reason, 0) + 1
        lines += [f"    refused {n}x: {reason}" for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1])]
    if len(check.held) > 1:
        s = summary(check.errors())
        lines.append(f"  overall: {s['configs']} configs, median {percent(s['median'])}, p90 {percent(s['p90'])}")
    lines += [f"  {note}" for note in check.notes]
    return lines


def check_json(check: Check) -> dict:
    return {
        "name": check.name,
        "description": check.description,
        "overall": summary(check.errors()),
        "nodes": {
            node: summary(check.errors(node)) | {"refused": [h.refused for h in check.refused(node)]}
            for node in check.held
        },
        "configs": [
            {
                "node": h.point.node,
                "config_key": h.point.config_key,
                "framework": h.point.cfg.framework,
                "precision": h.point.cfg.precision,
                "measured_s": h.point.measured_s,
                "predicted_s": h.predicted_s,
                "refused": h.refused,
            }
            for held in check.held.values()
            for h in held
        ],
        "notes": check.notes,
    }
