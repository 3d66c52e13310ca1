"""Run a plan through Ray Tune on one node or on every node of a cluster.

Each selected node first expands the plan itself (sweep/nodes.py): what it cannot run becomes an
`unsupported` row for that node. Then every (node, trial) pair runs as a Ray Tune trial on a placement
group that claims all CPUs of its node (sweep/scheduler.py hands Tune one pair per free node), so no two
timed trials ever share a node and all nodes work in parallel. Inside, the trial starts the worker
process of trainables/ pinned to concrete cores and reports its row to Tune; the driver's callback, and
nothing else, writes each row to the store as it arrives (sweep/tuning.py). A study that asks for
refinement then gets Optuna's points where its curve bends, on each node.

Each node runs its trials in the sweep's order (sweep/scheduler.py `sweep_order`): every point `repeats` times, in
rounds shuffled with `order_seed`, with the baseline re-measured as a control point every `control_every` trials.
The order is fixed when the sweep starts: the manifest keeps each pair's repeat and place in it.

Resume: the store, written atomically row by row, is the truth about which pairs finished (Tune's own
experiment state lags the results: a trial finished just before a kill -9 may still be "running"
there), so a resumed sweep starts a new Tune experiment over exactly the pairs the store lacks, in their order.
"""

from __future__ import annotations

import functools
import json
import statistics
import sys
import time
from pathlib import Path

import optuna
import ray
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from hwctl.housekeeping import trial_cpus, wait_until_trial_cpus_quiet
from sweep.budget import Budget
from sweep.disk_space import free_space_warning
from sweep.ledger import SweepLedger, pair_of
from sweep.manifest import load_manifest, new_sweep_id, write_manifest
from sweep.nodes import Node, NodePlan, alive_ips, alive_nodes, nowhere_runnable, probe_nodes, select_nodes
from sweep.plan import CONTROL_STUDY, MAX_REPEATS, ORDER_KEYS, PlanError
from sweep.racing_rounds import racing_rounds
from sweep.refine import BendSampler, distribution_for, optuna_storage, study_name
from sweep.results.racing import FIRST_LOOK_ROUNDS
from sweep.results.store import Store
from sweep.results.wall_time import WallTime
from sweep.scheduler import LostNodeStopper, NodeQueue, sweep_order
from sweep.tuning import NODE_SHARE, StoreWriter, fit_tuner, node_bundle, ray_session, tune_point_trial, tune_trial
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
    repeats: int | None = None,
    dashboard: bool = False,
    wall_time: WallTime | None = None,
    budget_s: float | None = None,
) -> SweepLedger:
    """Run (or, with resume, continue) a sweep on the selected nodes; returns it with its pairs in the store.
    `repeats` overrides the plan's own (`bench.py run --repeats N`). `dashboard` and its host and port apply to a
    Ray started here (no `address`) only. `wall_time` times the run's sections and takes every row recorded.
    `budget_s` overrides the plan's `budget` (`bench.py run --budget`): the whole run's seconds, Ray's start included."""
    document = with_repeats(document, source, repeats, resume)
    if budget_s is not None and resume:
        raise PlanError("--resume", ["--budget: a resumed sweep spends what is left of the budget it started with"])
    wall_time = wall_time or WallTime()
    run_started = time.monotonic() - (time.perf_counter() - wall_time.started)
    # the session less the sections inside it is Ray's start and stop
    with wall_time.section("ray"), ray_session(address, dashboard_host, dashboard_port, quiet, dashboard=dashboard):
        with wall_time.section("plan"):
            if resume:
                sweep, source = resumed_sweep(result_dir, resume_sweep, quiet)
            else:
                sweep = new_sweep(document, source, result_dir, nodes, record_unsupported, quiet, budget_s)
        if sweep.budget is not None:
            sweep.budget.started = run_started
        sweep.wall_time = wall_time
        warning = free_space_warning(result_dir, len(sweep.missing()))
        if warning:
            print(warning, file=sys.stderr)
        with wall_time.section("settle"):
            settle(sorted(alive_ips() & set(sweep.node_columns)), quiet)
        _run(sweep, result_dir, wall_time, source)
    done = not sweep.missing() and (sweep.budget is not None or not sweep.refine_pending())
    write_manifest(result_dir, sweep, source, "finished" if done else "running")
    return sweep


def with_repeats(document: dict | None, source: str | None, repeats: int | None, resume: bool) -> dict | None:
    """The plan with `--repeats` in place of its own `repeats`; checked before Ray starts."""
    if repeats is None:
        return document
    if resume:
        raise PlanError("--resume", ["--repeats: a resumed sweep keeps the repeats and order it started with"])
    if not 1 <= repeats <= MAX_REPEATS:
        raise PlanError(source, [f"--repeats {repeats}: must be {ORDER_KEYS['repeats'][-1]}"])
    return document | {"repeats": repeats}


def settle(node_ips: list[str], quiet: bool, timeout_s: float = 90.0) -> dict[str, tuple[float, float]]:
    """Wait until each node's CPUs are quiet before the first timed trial: a Ray that just started, and a node that
    just measured its peaks, are busy for seconds. A task pinned to each node watches that node's own CPUs, all
    nodes at once; `timeout_s` is the wait's own limit (60 s) plus a worker's start-up. Returns each answering
    node's (seconds waited, last busy fraction)."""
    task = ray.remote(wait_until_trial_cpus_quiet)  # the trials' CPUs: Ray's processes are off them
    waits = {
        ip: task.options(num_cpus=0, resources={f"node:{ip}": NODE_SHARE}, max_retries=0).remote() for ip in node_ips
    }
    deadline = time.monotonic() + timeout_s
    settled = {}
    for ip, wait in waits.items():
        try:
            settled[ip] = ray.get(wait, timeout=max(deadline - time.monotonic(), 0))
        except ray.exceptions.RayError as exc:  # the node left (or never answered): _run leaves a lost node out
            ray.cancel(wait)  # a task still waiting for its node must not stay behind as demand for one
            print(f"node {ip}: no settle wait: {type(exc).__name__}")
            continue
        if not quiet:
            waited, busy = settled[ip]
            print(f"node {ip}: waited {waited:.0f} s for its CPUs to settle: {busy:.0%} busy")
    return settled


def new_sweep(
    document: dict,
    source: str,
    result_dir: Path,
    node_selection: str,
    record_unsupported: bool,
    quiet: bool,
    budget_s: float | None = None,
) -> SweepLedger:
    """Expand the plan on every selected node and write the manifest."""
    node_plans = probe_nodes(select_nodes(alive_nodes(), node_selection), document, source, str(DATA_DIR))
    # the plan's own `record_unsupported: true` counts as the flag (each node's expansion honoured it already)
    record_unsupported = record_unsupported or document.get("record_unsupported") is True
    problems = [] if record_unsupported else nowhere_runnable(node_plans)
    if problems:
        raise PlanError(source, problems)
    pairs = []
    for node_plan in node_plans:
        pairs += node_pairs(node_plan)
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
        order={key: getattr(plan, key) for key in ORDER_KEYS},
        quiet=quiet,
    )
    seconds = budget_s if budget_s is not None else plan.budget_s
    if seconds is not None:
        sweep.budget = Budget(
            seconds, plan.delta, first_round=max(plan.repeats, FIRST_LOOK_ROUNDS), rounds=plan.repeats
        )
    write_manifest(result_dir, sweep, source, "running")
    return sweep


def node_pairs(node_plan: NodePlan) -> list[dict]:
    """One node's pairs: the points it cannot run once (recorded, not run), then every repeat of the others and its
    control points, in the sweep's order."""
    plan, ip, host = node_plan.plan, node_plan.node.ip, node_plan.node.hostname
    pairs = [pair_of(i, ip, host, t, order_seed=plan.order_seed) for i, t in enumerate(plan.trials) if t.unsupported]
    # one measurement per distinct config: the studies holding it share its row (the baseline is in most of them)
    # the whole config, not config_key: that leaves out run-only keys (timeout_s, memory_cap_mb, ...) that differ
    holders: dict[str, list[int]] = {}
    for i, t in enumerate(plan.trials):
        if not t.unsupported:
            holders.setdefault(json.dumps(t.config.to_dict(), sort_keys=True, default=str), []).append(i)
    measured = list(holders.values())
    order = sweep_order(len(measured), plan.repeats, plan.order_seed, plan.control_every if plan.control else 0)
    for position, (point, repeat) in enumerate(order):
        if point is None:
            pairs.append(
                pair_of(None, ip, host, plan.control, repeat=repeat, trial_order=position, order_seed=plan.order_seed)
            )
            continue
        first = len(pairs)
        for index in measured[point]:
            pair = pair_of(
                index, ip, host, plan.trials[index], repeat=repeat, trial_order=position, order_seed=plan.order_seed
            )
            pairs.append(pair | ({"measured_by": first} if index != measured[point][0] else {}))
        pairs[first]["shares"] = list(range(first + 1, len(pairs)))
    return pairs


def resumed_sweep(result_dir: Path, sweep_id: str | None, quiet: bool) -> tuple[SweepLedger, str]:
    data = load_manifest(result_dir, sweep_id)
    sweep = SweepLedger(
        data["sweep"],
        data["plan"],
        Store(result_dir),
        pairs=data["trials"],
        node_columns=data["nodes"],
        refinements=data["refine"],
        order=data.get("order"),
        quiet=quiet,
    )
    if data.get("budget"):
        sweep.budget = Budget.from_manifest(data["budget"])
    return sweep, data["source"]


def _run(sweep: SweepLedger, result_dir: Path, wall_time: WallTime, source: str) -> None:
    present = {n.ip: n for n in alive_nodes() if n.ip in sweep.node_columns}
    if not sweep.quiet:
        nodes = ", ".join(f"{n.label} {n.cpus} CPUs" for n in present.values())
        print(
            f"sweep {sweep.sweep_id}: {len(sweep.pairs)} trials on {len(present)} node(s) [{nodes}], "
            f"{len(sweep.done)} already in {sweep.store.root}"
        )
        if sweep.order:
            controls = sum(pair.get("phase") == CONTROL_STUDY for pair in sweep.pairs)
            settings = ", ".join(f"{key} {value}" for key, value in sweep.order.items())
            print(f"  order: {settings}; {controls} of the trials are control points (the baseline again)")
        for ip in sorted(set(sweep.node_columns) - set(present)):
            print(f"  node {ip} is not in the cluster: its {len(sweep.missing_on({ip}))} missing trials wait")
    for i in sweep.missing_on(set(present)):  # recorded, not run: that node cannot honour them
        pair = sweep.pairs[i]
        if pair["unsupported"]:
            sweep.record_failure(pair, pair["unsupported"], status="unsupported")
    cpus = {ip: n.cpus for ip, n in present.items()}

    def live() -> set[str]:  # the sweep's nodes still in the cluster
        return (alive_ips() & set(present)) - sweep.lost_nodes

    def run_pairs(indices: list[int]) -> list[int]:  # under the budget: the pairs it dropped
        dropped = _run_pairs(sweep, indices, cpus, result_dir)
        sweep.drop(dropped, "budget")
        return dropped

    with wall_time.section("trials"):
        for _ in range(3):  # later rounds: a pair Tune ended without a row (stopped, or its node just left)
            if not sweep.missing_on(live()) or run_pairs(sweep.missing_on(live())):
                break
    with wall_time.section("refinement"):
        refine_studies(sweep, [n for ip, n in present.items() if ip in live()], result_dir)
    if sweep.budget is not None:
        with wall_time.section("trials"):
            racing_rounds(sweep, run_pairs, live, lambda: write_manifest(result_dir, sweep, source, "running"))


INTERRUPTED = "interrupted"  # a row's status: the sweep was stopped while its trial ran (store.identities skips it)
INTERRUPTED_REASON = "bench.py run was interrupted (Ctrl-C or SIGTERM) while this trial ran; --resume measures it again"


def _run_pairs(sweep: SweepLedger, indices: list[int], cpus: dict[str, int], result_dir: Path) -> list[int]:
    """One Tune experiment over these (node, trial) pairs: one trial per node at a time, all nodes at once. Under a
    budget, a pair that would end after it does not start: returns those."""
    pending = sweep.pending_by_node(indices)

    def config_of(i: int) -> dict:
        pair = sweep.pairs[i]
        return {
            "trial": {"i": i, "node": pair["node"], "study": pair["study"], "repeat": pair["repeat"], **pair["point"]}
        }

    deadline = sweep.budget.deadline() if sweep.budget is not None else None
    queue = NodeQueue(pending, config_of, alive_ips, sweep.lost_nodes, deadline, sweep.expected_s)
    try:
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
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the trials in flight are recorded, never as ok; resume re-runs them
        for index in queue.in_flight():
            sweep.record_failure(sweep.pairs[index], INTERRUPTED_REASON, status=INTERRUPTED)
        raise
    except Exception:
        if (
            sweep.write_error is not None
        ):  # the store's error, not Tune's wrapping of it (a full disk: bench.py says so)
            raise sweep.write_error from None
        raise
    return queue.dropped


# ---- refinement -----------------------------------------------------------------------------------
def refine_studies(sweep: SweepLedger, nodes: list[Node], result_dir: Path) -> None:
    """Optuna refinement of every study that asks for it, on each node (one after another), after its grid. Under a
    budget, only the points whose expected trials fit in what is left."""
    for node in nodes:
        for study, refinement in sweep.refinements.items():
            rows = [r for r in sweep.store.rows(sweep.sweep_id) if r["study"] == study and r.get("node") == node.ip]
            remaining = refinement["points"] - sum(r.get("phase") == "refine" for r in rows)
            ok = [r for r in rows if r["status"] == "ok"]
            if sweep.budget is not None:
                cycle = sweep.node_cycle_s(node.ip)
                remaining = min(remaining, int(sweep.budget.left_s() // cycle) if cycle else remaining)
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
    times: dict = {}  # each grid value's step times, one per repeat
    for r in ok_rows:
        times.setdefault(json.loads(r["point"])[axis], []).append(r["step_time_median_s"])
    points = {x: statistics.median(ys) for x, ys in times.items()}
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
        # noise from the stored repeats: a bend inside the points' own intervals is not chased; Tune pickles it
        sampler=BendSampler.from_rows(functools.partial(_accepts, base, axis), log, ok_rows, axis),
        storage=db,
        study_name=name,
        points_to_evaluate=[{axis: x} for x in warm] or None,
        evaluated_rewards=list(warm.values()) or None,
    )


def _accepts(base: dict, axis: str, value) -> bool:
    """A value the model accepts (e.g. width divisible by heads) and this node can run."""
    try:
        return unsupported_reason(build_config(base | {axis: value}), trial_cpus()) is None
    except ConfigError:
        return False
