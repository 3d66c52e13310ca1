"""Run a plan through Ray Tune on one node or on every node of a cluster.

Each selected node first expands the plan itself (sweep/nodes.py): what it cannot run becomes an
`unsupported` row for that node. Then every (node, trial) pair runs as a Ray Tune trial on a placement
group that claims all CPUs of its node (sweep/scheduler.py hands Tune one pair per free node), so no two
timed trials ever share a node and all nodes work in parallel. Inside, the trial starts the worker
process of trainables/ pinned to concrete cores and reports its row to Tune; the driver's callback, and
nothing else, writes each row to the store as it arrives (sweep/tuning.py). A study that asks for
refinement then gets Optuna's points where its curve bends, on each node.

Resume: the store, written atomically row by row, is the truth about which pairs finished (Tune's own
experiment state lags the results: a trial finished just before a kill -9 may still be "running"
there), so a resumed sweep starts a new Tune experiment over exactly the pairs the store lacks.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from sweep.ledger import SweepLedger, pair_of
from sweep.manifest import load_manifest, new_sweep_id, write_manifest
from sweep.nodes import Node, alive_ips, alive_nodes, nowhere_runnable, probe_nodes, select_nodes
from sweep.plan import PlanError
from sweep.refine import BendSampler, distribution_for, optuna_storage, study_name
from sweep.results.store import Store
from sweep.scheduler import LostNodeStopper, NodeQueue
from sweep.tuning import StoreWriter, fit_tuner, node_bundle, ray_session, tune_point_trial, tune_trial
from trainables.config import ConfigError, build_config, field_kind
from trainables.launcher import DATA_DIR, unsupported_reason


def run_sweep(
    document: dict | None,
    source: str | None,
    result_dir: Path,
    *,
    resume_sweep: str | None = None,
    resume: bool = False,
    address: str | None = None,
    nodes: str = "all",
    record_unsupported: bool = False,
    dashboard_host: str = "127.0.0.1",
    dashboard_port: int = 8265,
    quiet: bool = False,
) -> SweepLedger:
    """Run (or, with resume, continue) a sweep on the selected nodes; returns it with its pairs in the store."""
    with ray_session(address, dashboard_host, dashboard_port, quiet):
        if resume:
            sweep, source = resumed_sweep(result_dir, resume_sweep, quiet)
        else:
            sweep = new_sweep(document, source, result_dir, nodes, record_unsupported, quiet)
        _run(sweep, result_dir)
    done = not sweep.missing() and not sweep.refine_pending()
    write_manifest(result_dir, sweep, source, "finished" if done else "running")
    return sweep


def new_sweep(
    document: dict, source: str, result_dir: Path, node_selection: str, record_unsupported: bool, quiet: bool
) -> SweepLedger:
    """Expand the plan on every selected node and write the manifest."""
    node_plans = probe_nodes(select_nodes(alive_nodes(), node_selection), document, source, str(DATA_DIR))
    problems = [] if record_unsupported else nowhere_runnable(node_plans)
    if problems:
        raise PlanError(source, problems)
    pairs = []
    for node_plan in node_plans:
        for trial in node_plan.plan.trials:
            pairs.append(pair_of(len(pairs), node_plan.node.ip, node_plan.node.hostname, trial))
        for skipped in node_plan.plan.skipped + node_plan.skipped_studies:
            if not quiet:
                print(f"  {node_plan.node.label}: {skipped}")
    plan = node_plans[0].plan
    sweep = SweepLedger(
        new_sweep_id(plan.name, result_dir),
        plan.name,
        Store(result_dir),
        pairs=pairs,
        node_columns={node_plan.node.ip: node_plan.columns for node_plan in node_plans},
        refinements=plan.refinements,
        quiet=quiet,
    )
    write_manifest(result_dir, sweep, source, "running")
    return sweep


def resumed_sweep(result_dir: Path, sweep_id: str | None, quiet: bool) -> tuple[SweepLedger, str]:
    data = load_manifest(result_dir, sweep_id)
    sweep = SweepLedger(
        data["sweep"],
        data["plan"],
        Store(result_dir),
        pairs=data["trials"],
        node_columns=data["nodes"],
        refinements=data["refine"],
        quiet=quiet,
    )
    return sweep, data["source"]


def _run(sweep: SweepLedger, result_dir: Path) -> None:
    present = {n.ip: n for n in alive_nodes() if n.ip in sweep.node_columns}
    if not sweep.quiet:
        nodes = ", ".join(f"{n.label} {n.cpus} CPUs" for n in present.values())
        print(
            f"sweep {sweep.sweep_id}: {len(sweep.pairs)} trials on {len(present)} node(s) [{nodes}], "
            f"{len(sweep.done)} already in {sweep.store.root}"
        )
        for ip in sorted(set(sweep.node_columns) - set(present)):
            print(f"  node {ip} is not in the cluster: its {len(sweep.missing_on({ip}))} missing trials wait")
    for i in sweep.missing_on(set(present)):  # recorded, not run: that node cannot honour them
        pair = sweep.pairs[i]
        if pair["unsupported"]:
            sweep.record_failure(pair, pair["unsupported"], status="unsupported")
    cpus = {ip: n.cpus for ip, n in present.items()}

    def live() -> set[str]:  # the sweep's nodes still in the cluster
        return (alive_ips() & set(present)) - sweep.lost_nodes

    for _ in range(3):  # later rounds: a pair Tune ended without a row (stopped, or its node just left)
        if not sweep.missing_on(live()):
            break
        _run_pairs(sweep, sweep.missing_on(live()), cpus, result_dir)
    refine_studies(sweep, [n for ip, n in present.items() if ip in live()], result_dir)


def _run_pairs(sweep: SweepLedger, indices: list[int], cpus: dict[str, int], result_dir: Path) -> None:
    """One Tune experiment over these (node, trial) pairs: one trial per node at a time, all nodes at once."""
    pending: dict[str, list[int]] = {}
    for i in indices:
        pending.setdefault(sweep.pairs[i]["node"], []).append(i)

    def config_of(i: int) -> dict:
        pair = sweep.pairs[i]
        return {"trial": {"i": i, "node": pair["node"], "study": pair["study"], **pair["point"]}}

    queue = NodeQueue(pending, config_of, alive_ips, sweep.lost_nodes)
    fit_tuner(
        tune_trial,
        {"pairs": sweep.pairs},
        lambda config: node_bundle(config["trial"]["node"], cpus[config["trial"]["node"]]),
        search_alg=queue,
        num_samples=-1,
        max_concurrent_trials=len(pending),  # one trial per node may run and one may wait for its node
        store_writer=StoreWriter(sweep),
        name=f"{sweep.sweep_id}-{int(time.time())}",
        result_dir=result_dir,
        stopper=LostNodeStopper(queue),
        show_progress=not sweep.quiet,
    )


# ---- refinement -----------------------------------------------------------------------------------
def refine_studies(sweep: SweepLedger, nodes: list[Node], result_dir: Path) -> None:
    """Optuna refinement of every study that asks for it, on each node (one after another), after its grid."""
    for node in nodes:
        for study, refinement in sweep.refinements.items():
            rows = [r for r in sweep.store.rows(sweep.sweep_id) if r["study"] == study and r.get("node") == node.ip]
            remaining = refinement["points"] - sum(r.get("phase") == "refine" for r in rows)
            ok = [r for r in rows if r["status"] == "ok"]
            if remaining <= 0 or len({json.loads(r["point"])[refinement["axis"]] for r in ok}) < 2:
                continue
            _run_refinement(sweep, node, study, refinement, ok, remaining, result_dir)


def _run_refinement(
    sweep: SweepLedger,
    node: Node,
    study: str,
    refinement: dict,
    ok_rows: list[dict],
    remaining: int,
    result_dir: Path,
) -> None:
    axis, base = refinement["axis"], refinement["base"]
    if not sweep.quiet:
        where = f" on {node.label}" if len(sweep.nodes) > 1 else ""
        print(f"refining study {study}{where}: {remaining} point(s) of {axis} chosen by Optuna where the curve bends")
    fit_tuner(
        tune_point_trial,
        {"base": base, "study": study, "phase": "refine"},
        node_bundle(node.ip, node.cpus),
        search_alg=_bend_searcher(sweep, node, study, refinement, ok_rows, result_dir),
        num_samples=remaining,
        max_concurrent_trials=1,
        store_writer=StoreWriter(sweep, (study, "refine", base, node.ip)),
        name=f"{sweep.sweep_id}-refine-{study}-{int(time.time())}",
        result_dir=result_dir,
    )


def _bend_searcher(
    sweep: SweepLedger, node: Node, study: str, refinement: dict, ok_rows: list[dict], result_dir: Path
) -> OptunaSearch:
    """The study's Optuna search on this node, warm-started with the grid points it does not hold yet."""
    axis, base = refinement["axis"], refinement["base"]
    points = {json.loads(r["point"])[axis]: r["step_time_median_s"] for r in ok_rows}
    distribution, log = distribution_for(list(points), field_kind(axis) == "int")
    # one Optuna study per node: each node's curve bends where its own caches and cores say
    name = study_name(sweep.sweep_id, study, node.ip if len(sweep.nodes) > 1 else None)
    db = optuna_storage(result_dir)
    try:  # resumed: the Optuna study already holds some points; warm-start only with the others
        study_so_far = optuna.load_study(study_name=name, storage=db)
        # COMPLETE only: a trial a killed driver left RUNNING may be in the store but not told to Optuna
        known = {t.params.get(axis) for t in study_so_far.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    except KeyError:
        known = set()
    warm = {x: y for x, y in points.items() if x not in known}
    return OptunaSearch(
        space={axis: distribution},
        metric="step_time_median_s",
        mode="min",
        sampler=BendSampler(functools.partial(_accepts, base, axis), log),  # Tune pickles the searcher
        storage=db,
        study_name=name,
        points_to_evaluate=[{axis: x} for x in warm] or None,
        evaluated_rewards=list(warm.values()) or None,
    )


def _accepts(base: dict, axis: str, value) -> bool:
    """A value the model accepts (e.g. width divisible by heads) and this node can run."""
    try:
        return unsupported_reason(build_config(base | {axis: value})) is None
    except ConfigError:
        return False
