"""Ray Tune as the sweep uses it, for the grid, the Optuna refinement and autotune alike: the Ray session, the
function each trial runs on its node, the placement group that pins it there, the callback that hands each row to
the sweep's ledger, and one Tune experiment over them.

Importing this module imports Ray: only the commands that run trials import it (`bench.py plan` and
`bench.py trial` never do, and start in a fraction of the time).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import ray
from ray import tune
from ray.tune.search import Searcher
from ray.util import get_node_ip_address

from hwctl.cores import format_cpu_list
from hwctl.fingerprint import host_fingerprint
from hwctl.housekeeping import (
    HOUSEKEEPING_ENV,
    NODE_CPUS_ENV,
    node_cpus,
    pin_processes,
    remember_node_cpus,
    split_node_cpus,
)
from sweep.ledger import SweepLedger, pair_columns
from sweep.nodes import node_gone
from trainables.config import TrialConfig, build_config
from trainables.launcher import DATA_DIR, OUTPUT_DIR, run_trial

# Tune's legacy console reporter: it takes the columns to show (the new one prints every metric of
# every finished trial, our row JSON included)
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# Ctrl-C must stop the sweep (and shut Ray down), not end one Tune experiment and start the next:
# the store, not Tune's last saved state, is what --resume continues from
os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
TUNE_DIR = "tune"
NODE_SHARE = 0.001  # of the `node:<IP>` resource (1 per node): enough to pin a bundle to that node
METRIC_COLUMNS = ["status_ok", "step_time_median_s", "tokens_per_s", "mfu"]
# the page opens on Ray's "Authentication Token Required" dialog; what it is given there becomes a cookie
# (ray-authentication-token, 30 days) for the browser's later visits
DASHBOARD_TOKEN_LINE = (
    "  token authentication is on: paste what `venv/bin/ray get-auth-token` prints into the page's token dialog"
)


# ---- the Ray session --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def ray_session(
    address: str | None = None,
    dashboard_host: str = "127.0.0.1",
    dashboard_port: int = 8265,
    quiet: bool = False,
    dashboard: bool = False,
) -> Iterator[None]:
    """Ray for the length of the block: started here (or connected to `address`) and shut down after. A Ray the
    caller already started is used and left running. `dashboard` and its host and port apply to a Ray started here
    only: a cluster's dashboard is its head's (`ray start --include-dashboard`).

    A Ray started here has its processes and the driver pinned to the node's housekeeping CPUs
    (hwctl/housekeeping.py) until it stops; each trial's actor pins itself there on every node."""
    if ray.is_initialized():
        yield
        return
    remembered = not address and remember_node_cpus()  # before the pin, which Ray's later workers inherit
    node = node_cpus()
    try:
        housekeeping = _start_ray(address, dashboard_host, dashboard_port, quiet, dashboard)
        try:
            yield
        finally:
            ray.shutdown()
            if housekeeping:  # the driver goes on (summary, report; a test process, other tests) on all its CPUs
                pin_processes([psutil.Process()], node)
    finally:
        if remembered:
            os.environ.pop(NODE_CPUS_ENV, None)


def _start_ray(
    address: str | None, dashboard_host: str, dashboard_port: int, quiet: bool, dashboard: bool
) -> list[int]:
    """Start (or join) Ray; a Ray started here is pinned to the housekeeping CPUs, which are returned."""
    # ray.init installs a C++ SIGTERM handler that exits on the spot; keep the caller's Python one
    # (bench.py turns SIGTERM into an orderly stop that shuts Ray down and kills the trial's worker)
    sigterm_handler = signal.getsignal(signal.SIGTERM)
    housekeeping = [] if address else split_node_cpus()[0]
    if address:
        # every node applies the same N to its own CPUs: the trials' actors read it there
        told = {HOUSEKEEPING_ENV: os.environ[HOUSEKEEPING_ENV]} if os.environ.get(HOUSEKEEPING_ENV) else {}
        ctx = ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": told} if told else None)
    else:
        ctx = ray.init(
            num_cpus=len(os.sched_getaffinity(0)),
            include_dashboard=dashboard,
            dashboard_host=dashboard_host,
            dashboard_port=dashboard_port,
            log_to_driver=False,
        )
    if callable(sigterm_handler):
        signal.signal(signal.SIGTERM, sigterm_handler)
    pinning = None
    if housekeeping:  # Ray's processes are this one's children (the raylet's workers too) and inherit its pin later
        driver = psutil.Process()
        pinning = pin_processes([driver, *driver.children(recursive=True)], housekeeping)
    if quiet:
        return housekeeping
    if pinning is not None:
        print(
            f"housekeeping CPUs {format_cpu_list(housekeeping)}: the driver and Ray's {len(pinning.pinned) - 1} "
            "processes pinned there, off the trials' CPUs"
            + "".join(f"; pid {pid} not pinned: {why}" for pid, why in sorted(pinning.failed.items()))
        )
    if not address and not dashboard:
        print(dashboard_off_line(housekeeping))
    elif ctx.dashboard_url:  # "" when the Ray has no dashboard
        print(f"Ray dashboard: http://{ctx.dashboard_url}")
        # ray.init sets RAY_AUTH_MODE=token in this process when it turned token auth on (Ray >= 2.59's default)
        if os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
            print(DASHBOARD_TOKEN_LINE)
    return housekeeping


def dashboard_off_line(housekeeping: list[int]) -> str:
    """What `bench.py run` prints without the dashboard: how to turn it on and, without a housekeeping CPU, its cost."""
    line = "Ray dashboard: off (bench.py run --dashboard turns it on to watch the trials live)"
    if housekeeping:
        return line
    return line + "; with no housekeeping CPU (--housekeeping-cpus) its processes would share the trials' CPUs"


# ---- inside a Ray Tune trial (runs on the node) -----------------------------------------------------------------
def tune_trial(config: dict, pairs: list[dict]) -> None:
    """A pair of the sweep (a grid point's repeat, or a control point): the sweep's pair number `config["trial"]["i"]`."""
    pair = pairs[config["trial"]["i"]]
    # the node's own data/ (token cache, peaks) and output/: the driver's paths may not exist here
    cfg = TrialConfig(**pair["config"])
    # a later round of a budgeted sweep measures as many steps as its node's noise asks for (sweep/racing_rounds.py);
    # the point, and so its key, stay the plan's
    measured = dataclasses.replace(cfg, **pair["measure"]) if pair.get("measure") else cfg
    row = _run_off_housekeeping(measured, preload_generation=int(pair.get("repeat", 0)))
    _report_row(row | pair_columns(pair) | {"config_key": cfg.config_key()})


def tune_point_trial(config: dict, base: dict, study: str, phase: str) -> None:
    """A point a searcher proposed (Optuna refinement, autotune): `base` plus the proposed keys."""
    row = _run_off_housekeeping(build_config(base | config))
    _report_row(row | {"study": study, "trial_index": None, "point": json.dumps(config), "phase": phase})


def _run_off_housekeeping(cfg: TrialConfig, preload_generation: int = 0) -> dict:
    """run_trial on the node's trial CPUs, this actor (every thread: Tune's, Ray's) on its housekeeping CPUs. The
    thread that starts the worker is on the trial's CPUs while it does: an unconfined worker inherits them."""
    remember_node_cpus()  # before the pin: a reused actor's next trial asks again
    housekeeping, trial_cpus = split_node_cpus()
    if housekeeping:
        pin_processes([psutil.Process()], housekeeping)
        os.sched_setaffinity(0, trial_cpus)  # this thread only (per thread on Linux)
    try:
        row = run_trial(
            cfg,
            data_dir=DATA_DIR,
            output_dir=OUTPUT_DIR,
            allowed_cpus=trial_cpus,
            preload_generation=preload_generation,
            fingerprint_id=host_fingerprint()["hw_fingerprint_id"],  # what _report_row records: read once per actor
        )
    finally:
        if housekeeping:
            os.sched_setaffinity(0, housekeeping)
    return row | {"housekeeping_cpus": format_cpu_list(housekeeping)}


def _report_row(row: dict) -> None:
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


def node_bundle(node: str, cpus: int) -> tune.PlacementGroupFactory:
    """Every CPU of one node, pinned there by its `node:<IP>` resource."""
    return tune.PlacementGroupFactory([{"CPU": cpus, f"node:{node}": NODE_SHARE}], strategy="STRICT_PACK")


# ---- in the driver ----------------------------------------------------------------------------------------------
class StoreWriter(tune.Callback):
    """Runs in the driver: each row goes to the sweep's ledger, and so to the store, the moment Tune hands it over."""

    def __init__(self, sweep: SweepLedger, proposed: tuple[str, str, dict, str | None] | None = None):
        # proposed: (study, phase, base config, node) of the trials a searcher proposes; None for grid pairs
        self.sweep, self.proposed = sweep, proposed

    def __getstate__(self):  # Tune pickles its RunConfig; only the live callback is ever used
        return {}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "row" in result:
            self.sweep.record(json.loads(result["row"]))

    def on_trial_error(self, iteration, trials, trial, **info):
        pair = self._pair_of(dict(trial.config))
        if pair is None:
            return
        reason = _ray_error(trial.error_file)
        if pair.get("node") and node_gone(pair["node"]):
            self.sweep.lost_nodes.add(pair["node"])
            reason = f"node lost: {pair.get('host')} ({pair['node']}) left the cluster during the trial; {reason}"
        self.sweep.record_failure(pair, reason)

    def _pair_of(self, config: dict) -> dict | None:
        """What the errored trial ran, as a pair: a grid pair, or a searcher's point on its base config."""
        if "trial" in config:
            return self.sweep.pairs[config["trial"]["i"]]
        if self.proposed is None:
            return None
        study, phase, base, node = self.proposed
        return {
            "study": study,
            "index": None,
            "point": config,
            "phase": phase,
            "node": node,
            "host": self.sweep.node_columns.get(node, {}).get("host"),
            "config": build_config(base | config).to_dict(),
        }


def _ray_error(error_file: str | None) -> str:
    """The last line of the trial's error file: the exception Ray raised."""
    reason = "Ray trial error"
    if error_file and Path(error_file).exists():
        lines = [ln.strip() for ln in Path(error_file).read_text().splitlines() if ln.strip()]
        reason = f"Ray trial error: {lines[-1][:500]}" if lines else reason
    return reason


def fit_tuner(
    trainable: Callable,
    parameters: dict,
    resources: tune.PlacementGroupFactory | Callable[[dict], tune.PlacementGroupFactory],
    *,
    search_alg: Searcher,
    num_samples: int,
    max_concurrent_trials: int,
    store_writer: StoreWriter,
    name: str,
    result_dir: Path,
    stopper: tune.Stopper | None = None,
    param_space: dict | None = None,
    show_progress: bool = False,
) -> None:
    """One Tune experiment: each trial runs `trainable(config, **parameters)` on `resources` and its row reaches the
    store through `store_writer`. Tune keeps its own state under `result_dir`/tune/`name`.

    `max_concurrent_trials` has no default: with a search algorithm Tune's own is 1. `show_progress` prints Tune's
    table of trials every 30 s."""
    tune.Tuner(
        tune.with_resources(tune.with_parameters(trainable, **parameters), resources),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=search_alg,
            num_samples=num_samples,
            max_concurrent_trials=max_concurrent_trials,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str((result_dir / TUNE_DIR).resolve()),
            callbacks=[store_writer],
            stop=stopper,
            verbose=1 if show_progress else 0,
            progress_reporter=_trials_table() if show_progress else None,
        ),
    ).fit()


def _trials_table() -> tune.CLIReporter:
    return tune.CLIReporter(metric_columns=METRIC_COLUMNS, max_report_frequency=30, max_column_length=40)
