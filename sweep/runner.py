"""Run a plan through Ray Tune on one node or on every node of a cluster.

Each selected node first expands the plan itself (sweep/nodes.py): what it cannot run becomes an
`unsupported` row for that node. Then every (node, trial) pair runs as a Ray Tune trial on a placement
group that claims all CPUs of its node (sweep/scheduler.py hands Tune one pair per free node), so no two
timed trials ever share a node and all nodes work in parallel. Inside, the trial starts the worker
process of trainables/ pinned to concrete cores and reports its row to Tune; the driver's callback, and
nothing else, writes each row to the store as it arrives.

Resume: the store, written atomically row by row, is the truth about which pairs finished (Tune's own
experiment state lags the results: a trial finished just before a kill -9 may still be "running"
there), so a resumed sweep starts a new Tune experiment over exactly the pairs the store lacks.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import time
from pathlib import Path

from sweep.manifest import load_manifest, new_sweep_id, write_manifest
from sweep.nodes import Node, alive_ips, alive_nodes, nowhere_runnable, probe_nodes, select_nodes
from sweep.plan import PlanError
from sweep.refine import BendSampler, distribution_for, optuna_storage, study_name
from sweep.results.store import Store
from sweep.scheduler import LostNodeStopper, NodeQueue
from sweep.sweeprun import SweepRun, spec_of
from trainables.config import ConfigError, TrialConfig, build_config, field_kind
from trainables.launcher import DATA_DIR, OUTPUT_DIR, run_trial, unsupported_reason

# Tune's legacy console reporter: it takes the columns to show (the new one prints every metric of
# every finished trial, our row JSON included)
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# Ctrl-C must stop the sweep (and shut Ray down), not end one Tune experiment and start the next:
# the store, not Tune's last saved state, is what --resume continues from
os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
TUNE_DIR = "tune"
NODE_SHARE = 0.001  # of the `node:<IP>` resource (1 per node): enough to pin a bundle to that node


# ---- inside a Ray Tune trial (runs on the node) ---------------------------------------------------
def tune_trial(config: dict, specs: list[dict]) -> None:
    spec = specs[config["trial"]["i"]]
    # the node's own data/ (token cache, peaks) and output/: the driver's paths may not exist here
    row = run_trial(TrialConfig(**spec["config"]), data_dir=DATA_DIR, output_dir=OUTPUT_DIR)
    row |= {"study": spec["study"], "trial_index": spec["index"], "point": json.dumps(spec["point"]), "phase": "grid"}
    _report_row(row)


def tune_point_trial(config: dict, base: dict, study: str, phase: str) -> None:
    """A point a searcher proposed (Optuna refinement, autotune): `base` plus the proposed keys."""
    cfg = build_config(base | config)
    row = run_trial(cfg, data_dir=DATA_DIR, output_dir=OUTPUT_DIR)
    _report_row(row | {"study": study, "trial_index": None, "point": json.dumps(config), "phase": phase})


def _report_row(row: dict) -> None:
    from ray import tune
    from ray.util import get_node_ip_address

    from hwctl.fingerprint import host_fingerprint

    row = row | host_fingerprint() | {"node": get_node_ip_address()}  # read here, on the node that ran it
    median = row.get("step_time_median_s")
    tune.report(
        {
            "status_ok": int(row["status"] == "ok"),
            # NaN for a failed trial: Optuna records it as failed, not as a fast one
            "step_time_median_s": median if median is not None else float("nan"),
            "tokens_per_s": row.get("tokens_per_s") or float("nan"),
            "mfu": row.get("mfu") or float("nan"),
            "row": json.dumps(row, default=str),
        }
    )


def _tune_callback_class():
    from ray import tune

    class StoreWriter(tune.Callback):
        """Runs in the driver: each row goes to the store the moment Tune hands it over."""

        def __init__(self, sweep: SweepRun, point: tuple[str, str, dict, str | None] | None = None):
            # point: (study, phase, base config, node) of the trials a searcher proposes
            self.sweep, self.point = sweep, point

        def __getstate__(self):  # Tune pickles its RunConfig; only the live callback is ever used
            return {}

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if "row" in result:
                self.sweep.record(json.loads(result["row"]))

        def on_trial_error(self, iteration, trials, trial, **info):
            reason = "Ray trial error"
            if trial.error_file and Path(trial.error_file).exists():
                lines = [ln.strip() for ln in Path(trial.error_file).read_text().splitlines() if ln.strip()]
                reason = f"Ray trial error: {lines[-1][:500]}" if lines else reason
            if "trial" in trial.config:  # a grid pair
                spec = self.sweep.specs[trial.config["trial"]["i"]]
            elif self.point is not None:  # a point a searcher proposed: base config + the proposed keys
                study, phase, base, node = self.point
                spec = {"study": study, "index": None, "point": dict(trial.config), "phase": phase, "node": node,
                        "host": self.sweep.node_columns.get(node, {}).get("host"),
                        "config": build_config(base | dict(trial.config)).to_dict()}  # fmt: skip
            else:
                return
            if spec.get("node") and node_gone(spec["node"]):
                self.sweep.lost_nodes.add(spec["node"])
                reason = f"node lost: {spec.get('host')} ({spec['node']}) left the cluster during the trial; {reason}"
            self.sweep.record_failure(spec, reason)

    return StoreWriter


def node_gone(ip: str, wait_s: float = 20.0) -> bool:
    """Whether the node left the cluster. Its trial's actor dies before Ray marks the node dead: wait a little."""
    deadline = time.monotonic() + wait_s
    while ip in alive_ips():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


# ---- the driver -----------------------------------------------------------------------------------
def start_ray(address: str | None, dashboard_host: str, dashboard_port: int, quiet: bool = False):
    import ray

    # ray.init installs a C++ SIGTERM handler that exits on the spot; keep the caller's Python one
    # (bench.py turns SIGTERM into an orderly stop that shuts Ray down and kills the trial's worker)
    sigterm_handler = signal.getsignal(signal.SIGTERM)
    if address:
        ctx = ray.init(address=address, log_to_driver=False)
    else:
        ctx = ray.init(
            num_cpus=len(os.sched_getaffinity(0)),
            include_dashboard=True,
            dashboard_host=dashboard_host,
            dashboard_port=dashboard_port,
            log_to_driver=False,
        )
    if callable(sigterm_handler):
        signal.signal(signal.SIGTERM, sigterm_handler)
    if not quiet and ctx.dashboard_url:
        print(f"Ray dashboard: http://{ctx.dashboard_url}")
        if os.environ.get("RAY_AUTH_MODE", "token") != "disabled":
            print(
                "  token authentication is on: paste the token the page asks for; print it with `venv/bin/ray get-auth-token`"
            )
    return ctx


def node_bundle(node: str, cpus: int):
    """Every CPU of one node, pinned there by its `node:<IP>` resource."""
    from ray import tune

    return tune.PlacementGroupFactory([{"CPU": cpus, f"node:{node}": NODE_SHARE}], strategy="STRICT_PACK")


def local_node() -> Node:
    """The node this driver runs on (autotune measures here)."""
    from ray.util import get_node_ip_address

    here = get_node_ip_address()
    return next(n for n in alive_nodes() if n.ip == here)


def _run_pairs(sweep: SweepRun, indices: list[int], cpus: dict[str, int], storage: Path) -> None:
    """One Tune experiment over these (node, trial) pairs: one trial per node at a time, all nodes at once."""
    from ray import tune

    pending: dict[str, list[int]] = {}
    for i in indices:
        pending.setdefault(sweep.specs[i]["node"], []).append(i)

    def config_of(i: int) -> dict:
        spec = sweep.specs[i]
        return {"trial": {"i": i, "node": spec["node"], "study": spec["study"], **spec["point"]}}

    queue = NodeQueue(pending, config_of, alive_ips, sweep.lost_nodes)
    trainable = tune.with_resources(
        tune.with_parameters(tune_trial, specs=sweep.specs),
        lambda config: node_bundle(config["trial"]["node"], cpus[config["trial"]["node"]]),
    )
    tune.Tuner(
        trainable,
        # one trial per node may run and one may wait for its node: with a searcher, Tune's default is 1 in all
        tune_config=tune.TuneConfig(
            search_alg=queue, num_samples=-1, max_concurrent_trials=len(pending), reuse_actors=True
        ),
        run_config=tune.RunConfig(
            name=f"{sweep.sweep_id}-{int(time.time())}",
            storage_path=str(storage),
            callbacks=[_tune_callback_class()(sweep)],
            stop=LostNodeStopper(queue),
            verbose=0 if sweep.quiet else 1,
            progress_reporter=tune.CLIReporter(
                metric_columns=["status_ok", "step_time_median_s", "tokens_per_s", "mfu"],
                max_report_frequency=30,
                max_column_length=40,
            ),
        ),
    ).fit()


def refine_studies(sweep: SweepRun, nodes: list[Node], result_dir: Path, storage: Path) -> None:
    """Optuna refinement of every study that asks for it, on each node (one after another), after its grid."""
    for node in nodes:
        for study, spec in sweep.refine.items():
            rows = [r for r in sweep.store.rows(sweep.sweep_id) if r["study"] == study and r.get("node") == node.ip]
            remaining = spec["points"] - sum(r.get("phase") == "refine" for r in rows)
            ok = [r for r in rows if r["status"] == "ok"]
            if remaining <= 0 or len({json.loads(r["point"])[spec["axis"]] for r in ok}) < 2:
                continue
            _run_refinement(sweep, node, study, spec, ok, remaining, result_dir, storage)


def _accepts(base: dict, axis: str, value) -> bool:
    """A value the model accepts (e.g. width divisible by heads) and this node can run."""
    try:
        return unsupported_reason(build_config(base | {axis: value})) is None
    except ConfigError:
        return False


def _run_refinement(
    sweep: SweepRun, node: Node, study: str, spec: dict, ok_rows: list[dict], remaining: int, result_dir: Path,
    storage: Path,
):  # fmt: skip
    import optuna
    from optuna.trial import TrialState
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    axis, base = spec["axis"], spec["base"]
    points = {json.loads(r["point"])[axis]: r["step_time_median_s"] for r in ok_rows}
    integer = field_kind(axis) == "int"
    distribution, log = distribution_for(list(points), integer)
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
    searcher = OptunaSearch(
        space={axis: distribution},
        metric="step_time_median_s",
        mode="min",
        sampler=BendSampler(functools.partial(_accepts, base, axis), log),  # Tune pickles the searcher
        storage=db,
        study_name=name,
        points_to_evaluate=[{axis: x} for x in warm] or None,
        evaluated_rewards=list(warm.values()) or None,
    )
    trainable = tune.with_resources(
        tune.with_parameters(tune_point_trial, base=base, study=study, phase="refine"), node_bundle(node.ip, node.cpus)
    )
    if not sweep.quiet:
        where = f" on {node.label}" if len(sweep.nodes) > 1 else ""
        print(f"refining study {study}{where}: {remaining} point(s) of {axis} chosen by Optuna where the curve bends")
    tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=remaining, max_concurrent_trials=1, reuse_actors=True
        ),
        run_config=tune.RunConfig(
            name=f"{sweep.sweep_id}-refine-{study}-{int(time.time())}",
            storage_path=str(storage),
            callbacks=[_tune_callback_class()(sweep, (study, "refine", base, node.ip))],
            verbose=0,
        ),
    ).fit()


def new_sweep(
    document: dict, source: str, result_dir: Path, nodes_spec: str, record_unsupported: bool, quiet: bool
) -> SweepRun:
    """Expand the plan on every selected node and write the manifest."""
    node_plans = probe_nodes(select_nodes(alive_nodes(), nodes_spec), document, source, str(DATA_DIR))
    problems = [] if record_unsupported else nowhere_runnable(node_plans)
    if problems:
        raise PlanError(source, problems)
    specs = []
    for node_plan in node_plans:
        for trial in node_plan.plan.trials:
            specs.append(spec_of(len(specs), node_plan.node.ip, node_plan.node.hostname, trial))
        for skipped in node_plan.plan.skipped + node_plan.skipped_studies:
            if not quiet:
                print(f"  {node_plan.node.label}: {skipped}")
    plan = node_plans[0].plan
    columns = {np.node.ip: np.columns for np in node_plans}
    sweep = SweepRun(
        new_sweep_id(plan.name, result_dir), plan.name, Store(result_dir), specs=specs, node_columns=columns,
        refine=plan.refine, quiet=quiet,
    )  # fmt: skip
    write_manifest(result_dir, sweep, source, "running")
    return sweep


def resumed_sweep(result_dir: Path, sweep_id: str | None, quiet: bool) -> tuple[SweepRun, str]:
    data = load_manifest(result_dir, sweep_id)
    sweep = SweepRun(
        data["sweep"], data["plan"], Store(result_dir), specs=data["trials"], node_columns=data["nodes"],
        refine=data["refine"], quiet=quiet,
    )  # fmt: skip
    return sweep, data["source"]


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
) -> SweepRun:
    """Run (or, with resume, continue) a sweep on the selected nodes; returns it with its pairs in the store."""
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        start_ray(address, dashboard_host, dashboard_port, quiet)
    try:
        if resume:
            sweep, source = resumed_sweep(result_dir, resume_sweep, quiet)
        else:
            sweep = new_sweep(document, source, result_dir, nodes, record_unsupported, quiet)
        _run(sweep, result_dir)
    finally:
        if started_here:
            ray.shutdown()
    done = not sweep.missing() and not sweep.refine_pending()
    write_manifest(result_dir, sweep, source, "finished" if done else "running")
    return sweep


def _run(sweep: SweepRun, result_dir: Path) -> None:
    present = {n.ip: n for n in alive_nodes() if n.ip in sweep.node_columns}
    if not sweep.quiet:
        nodes = ", ".join(f"{n.label} {n.cpus} CPUs" for n in present.values())
        print(f"sweep {sweep.sweep_id}: {len(sweep.specs)} trials on {len(present)} node(s) [{nodes}], "
              f"{len(sweep.done)} already in {sweep.store.root}")  # fmt: skip
        for ip in sorted(set(sweep.node_columns) - set(present)):
            print(f"  node {ip} is not in the cluster: its {len(sweep.missing_on({ip}))} missing trials wait")
    for i in sweep.missing_on(set(present)):  # recorded, not run: that node cannot honour them
        spec = sweep.specs[i]
        if spec["unsupported"]:
            sweep.record_failure(spec, spec["unsupported"], status="unsupported")
    storage = (result_dir / TUNE_DIR).resolve()
    cpus = {ip: n.cpus for ip, n in present.items()}

    def live() -> set[str]:  # the sweep's nodes still in the cluster
        return (alive_ips() & set(present)) - sweep.lost_nodes

    for _ in range(3):  # later rounds: a pair Tune ended without a row (stopped, or its node just left)
        if not sweep.missing_on(live()):
            break
        _run_pairs(sweep, sweep.missing_on(live()), cpus, storage)
    refine_studies(sweep, [n for ip, n in present.items() if ip in live()], result_dir, storage)
