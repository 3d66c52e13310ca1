"""Run a plan through Ray Tune: one trial per point, each on a placement group that claims every CPU
of its node (STRICT_PACK), so no two timed trials ever share a node. Inside, the trial starts the
worker process of trainables/ pinned to concrete cores, and reports its row to Tune; the driver's
callback writes each row to the store as it arrives and prints progress.

Resume: the store, written atomically row by row, is the truth about which trials finished. Tune's
own experiment state is restored with Tuner.restore, but it lags the results (a trial finished just
before a kill -9 may still be "running" there), so every trial first checks a skip list built from
the store, and any trial the store still lacks afterwards is run in a follow-up experiment.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

from hwctl.fingerprint import host_fingerprint
from sweep.plan import Plan, Trial
from sweep.store import Store
from sweep.summary import skipped_text
from trainables.config import TrialConfig
from trainables.launcher import DATA_DIR, OUTPUT_DIR, base_row, now_iso, run_trial

# Tune's legacy console reporter: it takes the columns to show (the new one prints every metric of
# every finished trial, our row JSON included)
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# Ctrl-C must stop the sweep (and shut Ray down), not end one Tune experiment and start the next:
# the store, not Tune's last saved state, is what --resume continues from
os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
TUNE_DIR = "tune"
SWEEPS_DIR = "sweeps"


# ---- the sweep manifest: what a sweep must run, kept so --resume needs nothing else --------------
def new_sweep_id(plan_name: str, result_dir: Path) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    sweep_id, n = f"{plan_name}-{stamp}", 1
    while (result_dir / SWEEPS_DIR / f"{sweep_id}.json").exists():
        n += 1
        sweep_id = f"{plan_name}-{stamp}-{n}"
    return sweep_id


def write_manifest(result_dir: Path, sweep_id: str, plan: Plan, state: str) -> None:
    folder = result_dir / SWEEPS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {
        "sweep": sweep_id,
        "plan": plan.name,
        "source": plan.source,
        "state": state,
        "updated_at": now_iso(),
        "trials": [
            {"study": t.study, "point": t.point, "config": t.config.to_dict(), "unsupported": t.unsupported}
            for t in plan.trials
        ],
    }
    tmp = folder / f".{sweep_id}.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, default=str))
    os.replace(tmp, folder / f"{sweep_id}.json")


def load_manifest(result_dir: Path, sweep_id: str | None) -> tuple[str, Plan]:
    """The named sweep, or the newest one that did not finish."""
    folder = result_dir / SWEEPS_DIR
    manifests = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True) if folder.exists() else []
    if sweep_id is not None:
        manifests = [p for p in manifests if p.stem == sweep_id]
        if not manifests:
            raise LookupError(f"no sweep {sweep_id!r} in {folder}")
    else:
        manifests = [p for p in manifests if json.loads(p.read_text())["state"] != "finished"]
        if not manifests:
            raise LookupError(f"no unfinished sweep to resume in {folder}")
    data = json.loads(manifests[0].read_text())
    trials = [Trial(t["study"], t["point"], TrialConfig(**t["config"]), t["unsupported"]) for t in data["trials"]]
    return data["sweep"], Plan(data["plan"], data["source"], {}, [], trials)


# ---- inside a Ray Tune trial (runs on the node) ---------------------------------------------------
def tune_trial(config: dict, trials: list[dict], skip: frozenset[str], data_dir: str, output_dir: str) -> None:
    from ray import tune
    from ray.util import get_node_ip_address

    spec = trials[config["trial"]["i"]]
    if spec["identity"] in skip:
        tune.report({"skipped": 1})
        return
    cfg = TrialConfig(**spec["config"])
    row = run_trial(cfg, data_dir=Path(data_dir), output_dir=Path(output_dir))
    row |= {
        "study": spec["study"],
        "trial_index": spec["index"],
        "point": json.dumps(spec["point"]),
        "node": get_node_ip_address(),
    }
    row |= host_fingerprint()
    tune.report(
        {
            "skipped": 0,
            "status_ok": int(row["status"] == "ok"),
            "step_time_median_s": row.get("step_time_median_s") or float("nan"),
            "tokens_per_s": row.get("tokens_per_s") or float("nan"),
            "mfu": row.get("mfu") or float("nan"),
            "row": json.dumps(row, default=str),
        }
    )


def _tune_callback_class():
    from ray import tune

    class StoreWriter(tune.Callback):
        """Runs in the driver: each row goes to the store the moment Tune hands it over."""

        def __init__(self, sweep: SweepRun):
            self.sweep = sweep

        def __getstate__(self):  # Tune pickles its RunConfig; the live sweep is handed back on restore
            return {}

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if result.get("skipped") == 0 and "row" in result:
                self.sweep.record(json.loads(result["row"]))

        def on_trial_error(self, iteration, trials, trial, **info):
            spec = self.sweep.specs[trial.config["trial"]["i"]]
            reason = "Ray trial error"
            if trial.error_file and Path(trial.error_file).exists():
                lines = [ln for ln in Path(trial.error_file).read_text().splitlines() if ln.strip()]
                reason = f"Ray trial error: {lines[-1][:500]}" if lines else reason
            self.sweep.record_failure(spec, reason)

    return StoreWriter


# ---- the driver -----------------------------------------------------------------------------------
class SweepRun:
    def __init__(self, sweep_id: str, plan: Plan, store: Store, *, quiet: bool = False):
        self.sweep_id, self.plan, self.store, self.quiet = sweep_id, plan, store, quiet
        self.specs = [
            {"index": i, "study": t.study, "point": t.point, "config": t.config.to_dict(), "identity": t.identity}
            for i, t in enumerate(plan.trials)
        ]
        self.done = store.identities(sweep_id)
        self.started = time.perf_counter()
        self.recorded_here = 0
        self.steps_s = 0.0  # time inside warm-up + measured steps of the trials run by this driver

    def record(self, row: dict) -> None:
        identity = f"{row['study']}/{row['config_key']}"
        if identity in self.done:  # never a duplicate row, whatever Tune replays
            return
        row = row | {"sweep": self.sweep_id, "plan": self.plan.name, "phase": "grid", "recorded_at": now_iso()}
        row.setdefault("host", socket.gethostname())
        self.store.append(row)
        self.done.add(identity)
        self.recorded_here += 1
        if row.get("status") == "ok":
            self.steps_s += row["timed_region_s"] - row["time_to_first_step_s"]
        self._progress(row)

    def record_failure(self, spec: dict, reason: str) -> None:
        cfg = TrialConfig(**spec["config"])
        row = base_row(cfg, cfg.config_key()) | {
            "study": spec["study"],
            "trial_index": spec["index"],
            "point": json.dumps(spec["point"]),
        }
        self.record(row | {"status": "failed", "error": reason, "finished_at": now_iso()})

    def _progress(self, row: dict) -> None:
        if self.quiet:
            return
        total, done = len(self.specs), len(self.done)
        elapsed = time.perf_counter() - self.started
        eta = elapsed / max(self.recorded_here, 1) * (total - done)
        point = " ".join(f"{k}={v}" for k, v in json.loads(row.get("point") or "{}").items())
        if row["status"] == "ok":
            what = f"{row['step_time_median_s'] * 1e3:8.1f} ms/step {row['tokens_per_s']:9,.0f} tok/s"
        else:
            what = f"{row['status']}: {str(row.get('error'))[:80]}"
        print(
            f"[{done}/{total}] {row['study']:<16} {point:<28} {what}  | {elapsed:6.0f} s, ETA {eta:5.0f} s", flush=True
        )

    def missing(self) -> list[int]:
        return [i for i, s in enumerate(self.specs) if s["identity"] not in self.done]


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


def node_cpus() -> int:
    import ray

    alive = [n for n in ray.nodes() if n.get("Alive")]
    return int(min(n["Resources"].get("CPU", 0) for n in alive))


def _run_tune(sweep: SweepRun, indices: list[int], name: str, storage: Path, restore: bool) -> None:
    from ray import tune

    trainable = tune.with_resources(
        tune.with_parameters(
            tune_trial,
            trials=sweep.specs,
            skip=frozenset(sweep.done),
            data_dir=str(DATA_DIR),
            output_dir=str(OUTPUT_DIR),
        ),
        tune.PlacementGroupFactory([{"CPU": node_cpus()}], strategy="STRICT_PACK"),
    )
    callbacks = [_tune_callback_class()(sweep)]
    path = storage / name
    if restore and tune.Tuner.can_restore(str(path)):
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, resume_errored=True)
        # the restored RunConfig holds an unpickled, empty copy of our callback: hand the live one back
        tuner._local_tuner.get_run_config().callbacks = callbacks
    else:
        points = [{"i": i, "study": sweep.specs[i]["study"], **sweep.specs[i]["point"]} for i in indices]
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search(points)},
            tune_config=tune.TuneConfig(reuse_actors=True),
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(storage),
                callbacks=callbacks,
                verbose=0 if sweep.quiet else 1,
                progress_reporter=tune.CLIReporter(
                    metric_columns=["status_ok", "step_time_median_s", "tokens_per_s", "mfu"],
                    max_report_frequency=30,
                    max_column_length=40,
                ),
            ),
        )
    tuner.fit()


def run_sweep(
    plan: Plan,
    result_dir: Path,
    *,
    resume_sweep: str | None = None,
    address: str | None = None,
    dashboard_host: str = "127.0.0.1",
    dashboard_port: int = 8265,
    quiet: bool = False,
) -> SweepRun:
    """Run (or resume) a sweep to completion; returns it with every trial in the store."""
    store = Store(result_dir)
    resuming = resume_sweep is not None
    sweep_id = resume_sweep if resuming else new_sweep_id(plan.name, result_dir)
    if not resuming:
        write_manifest(result_dir, sweep_id, plan, "running")
    sweep = SweepRun(sweep_id, plan, store, quiet=quiet)
    if not quiet:
        print(
            f"sweep {sweep_id}: {len(plan.trials)} trials, {len(sweep.done)} already in {store.root}{skipped_text(plan)}"
        )
    for i in sweep.missing():  # recorded, not run: this node cannot honour them
        trial = plan.trials[i]
        if trial.unsupported:
            row = base_row(trial.config, trial.config_key) | host_fingerprint()
            row |= {"study": trial.study, "trial_index": i, "point": json.dumps(trial.point)}
            sweep.record(row | {"status": "unsupported", "error": trial.unsupported, "finished_at": now_iso()})
    if sweep.missing():
        import ray

        started_here = not ray.is_initialized()
        if started_here:
            start_ray(address, dashboard_host, dashboard_port, quiet)
        try:
            storage = (result_dir / TUNE_DIR).resolve()
            _run_tune(sweep, sweep.missing(), sweep_id, storage, restore=resuming)
            rounds = 0
            while sweep.missing() and rounds < 2:  # Tune's state said finished, the store says not
                rounds += 1
                _run_tune(sweep, sweep.missing(), f"{sweep_id}-fill{int(time.time())}", storage, restore=False)
        finally:
            if started_here:
                ray.shutdown()
    write_manifest(result_dir, sweep_id, plan, "finished" if not sweep.missing() else "running")
    return sweep
