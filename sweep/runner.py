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

import functools
import json
import os
import signal
import socket
import time
from pathlib import Path

from hwctl.fingerprint import host_fingerprint
from sweep.manifest import new_sweep_id, write_manifest
from sweep.plan import Plan
from sweep.refine import BendSampler, bend_score_of, distribution_for, optuna_storage, study_name
from sweep.store import Store
from sweep.summary import skipped_text
from trainables.config import FIELD_TYPES, ConfigError, TrialConfig, build_config
from trainables.launcher import DATA_DIR, OUTPUT_DIR, base_row, now_iso, run_trial, unsupported_reason

# Tune's legacy console reporter: it takes the columns to show (the new one prints every metric of
# every finished trial, our row JSON included)
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# Ctrl-C must stop the sweep (and shut Ray down), not end one Tune experiment and start the next:
# the store, not Tune's last saved state, is what --resume continues from
os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
TUNE_DIR = "tune"


# ---- inside a Ray Tune trial (runs on the node) ---------------------------------------------------
def tune_trial(config: dict, trials: list[dict], skip: frozenset[str], data_dir: str, output_dir: str) -> None:
    from ray import tune

    spec = trials[config["trial"]["i"]]
    if spec["identity"] in skip:
        tune.report({"skipped": 1})
        return
    cfg = TrialConfig(**spec["config"])
    row = run_trial(cfg, data_dir=Path(data_dir), output_dir=Path(output_dir))
    row |= {"study": spec["study"], "trial_index": spec["index"], "point": json.dumps(spec["point"]), "phase": "grid"}
    _report_row(row)


def tune_point_trial(config: dict, base: dict, study: str, phase: str, data_dir: str, output_dir: str) -> None:
    """A point a searcher proposed (Optuna refinement, autotune): `base` plus the proposed keys."""
    cfg = build_config(base | config)
    row = run_trial(cfg, data_dir=Path(data_dir), output_dir=Path(output_dir))
    _report_row(row | {"study": study, "trial_index": None, "point": json.dumps(config), "phase": phase})


def _report_row(row: dict) -> None:
    from ray import tune
    from ray.util import get_node_ip_address

    row = row | {"node": get_node_ip_address()} | host_fingerprint()
    median = row.get("step_time_median_s")
    tune.report(
        {
            "skipped": 0,
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

        def __init__(self, sweep: SweepRun, point: tuple[str, str, dict] | None = None):
            self.sweep, self.point = sweep, point  # point: (study, phase, base config) of searcher trials

        def __getstate__(self):  # Tune pickles its RunConfig; the live sweep is handed back on restore
            return {}

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if result.get("skipped") == 0 and "row" in result:
                self.sweep.record(json.loads(result["row"]))

        def on_trial_error(self, iteration, trials, trial, **info):
            reason = "Ray trial error"
            if trial.error_file and Path(trial.error_file).exists():
                lines = [ln for ln in Path(trial.error_file).read_text().splitlines() if ln.strip()]
                reason = f"Ray trial error: {lines[-1][:500]}" if lines else reason
            if "trial" in trial.config:  # a grid trial
                self.sweep.record_failure(self.sweep.specs[trial.config["trial"]["i"]], reason)
            elif self.point is not None:  # a point a searcher proposed: base config + the proposed keys
                study, phase, base = self.point
                spec = {"study": study, "index": None, "point": dict(trial.config), "phase": phase,
                        "config": build_config(base | dict(trial.config)).to_dict()}  # fmt: skip
                self.sweep.record_failure(spec, reason)

    return StoreWriter


# ---- the driver -----------------------------------------------------------------------------------
class SweepRun:
    def __init__(self, sweep_id: str, plan: Plan, store: Store, *, quiet: bool = False, expected: int | None = None):
        self.sweep_id, self.plan, self.store, self.quiet = sweep_id, plan, store, quiet
        # trials this sweep will record: the grid plus every refined point (or what the caller says)
        self.expected = (
            expected if expected is not None else len(plan.trials) + sum(s["points"] for s in plan.refine.values())
        )
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
        # never a duplicate grid row, whatever Tune replays on resume; a searcher may measure a point twice
        if identity in self.done and row.get("phase", "grid") == "grid":
            return
        row = row | {"sweep": self.sweep_id, "plan": self.plan.name, "recorded_at": now_iso()}
        row.setdefault("phase", "grid")
        if row["phase"] == "refine":
            row["bend_score"] = self._bend_score(row)
        row.setdefault("host", socket.gethostname())
        self.store.append(row)
        self.done.add(identity)
        self.recorded_here += 1
        if row.get("status") == "ok":
            self.steps_s += row["timed_region_s"] - row["time_to_first_step_s"]
        self._progress(row)

    def _bend_score(self, row: dict) -> float | None:
        """The bend score of the interval the refined point fell in, from the points measured before it."""
        axis, value = next(iter(json.loads(row["point"]).items()))
        before = [r for r in self.store.rows(self.sweep_id) if r["study"] == row["study"] and r["status"] == "ok"]
        xs = [json.loads(r["point"])[axis] for r in before]
        return bend_score_of(value, xs, [r["step_time_median_s"] for r in before])

    def record_failure(self, spec: dict, reason: str) -> None:
        cfg = TrialConfig(**spec["config"])
        row = base_row(cfg, cfg.config_key()) | {
            "study": spec["study"],
            "trial_index": spec["index"],
            "point": json.dumps(spec["point"]),
            "phase": spec.get("phase", "grid"),
        }
        self.record(row | {"status": "failed", "error": reason, "finished_at": now_iso()})

    def _progress(self, row: dict) -> None:
        if self.quiet:
            return
        total, done = self.expected, len(self.done)
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

    def refine_pending(self) -> bool:
        """A refining study still short of its points (and with a grid to refine between)."""
        if not self.plan.refine:
            return False
        rows = self.store.rows(self.sweep_id)
        for study, spec in self.plan.refine.items():
            refined = sum(r["study"] == study and r.get("phase") == "refine" for r in rows)
            grid_ok = sum(
                r["study"] == study and r.get("phase", "grid") == "grid" and r["status"] == "ok" for r in rows
            )
            if refined < spec["points"] and grid_ok >= 2:
                return True
        return False

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


def refine_studies(sweep: SweepRun, result_dir: Path, storage: Path) -> None:
    """Optuna refinement of every study that asks for it, after its grid points are in the store."""
    for study, spec in sweep.plan.refine.items():
        rows = [r for r in sweep.store.rows(sweep.sweep_id) if r["study"] == study]
        remaining = spec["points"] - sum(r.get("phase") == "refine" for r in rows)
        ok = [r for r in rows if r["status"] == "ok"]
        if remaining <= 0 or len({json.loads(r["point"])[spec["axis"]] for r in ok}) < 2:
            continue
        _run_refinement(sweep, study, spec, ok, remaining, result_dir, storage)


def _accepts(base: dict, axis: str, value) -> bool:
    """A value the model accepts (e.g. width divisible by heads) and this node can run."""
    try:
        return unsupported_reason(build_config(base | {axis: value})) is None
    except ConfigError:
        return False


def _run_refinement(
    sweep: SweepRun, study: str, spec: dict, ok_rows: list[dict], remaining: int, result_dir: Path, storage: Path
):
    import optuna
    from optuna.trial import TrialState
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    axis, base = spec["axis"], spec["base"]
    points = {json.loads(r["point"])[axis]: r["step_time_median_s"] for r in ok_rows}
    integer = FIELD_TYPES[axis].replace(" | None", "") == "int"
    distribution, log = distribution_for(list(points), integer)
    name, db = study_name(sweep.sweep_id, study), optuna_storage(result_dir)
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
        tune.with_parameters(
            tune_point_trial, base=base, study=study, phase="refine", data_dir=str(DATA_DIR), output_dir=str(OUTPUT_DIR)
        ),
        tune.PlacementGroupFactory([{"CPU": node_cpus()}], strategy="STRICT_PACK"),
    )
    if not sweep.quiet:
        print(f"refining study {study}: {remaining} point(s) of {axis} chosen by Optuna where the curve bends")
    tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=remaining, max_concurrent_trials=1, reuse_actors=True
        ),
        run_config=tune.RunConfig(
            name=f"{sweep.sweep_id}-refine-{study}-{int(time.time())}",
            storage_path=str(storage),
            callbacks=[_tune_callback_class()(sweep, (study, "refine", base))],
            verbose=0,
        ),
    ).fit()


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
    if sweep.missing() or sweep.refine_pending():
        import ray

        started_here = not ray.is_initialized()
        if started_here:
            start_ray(address, dashboard_host, dashboard_port, quiet)
        try:
            storage = (result_dir / TUNE_DIR).resolve()
            if sweep.missing():
                _run_tune(sweep, sweep.missing(), sweep_id, storage, restore=resuming)
            rounds = 0
            while sweep.missing() and rounds < 2:  # Tune's state said finished, the store says not
                rounds += 1
                _run_tune(sweep, sweep.missing(), f"{sweep_id}-fill{int(time.time())}", storage, restore=False)
            refine_studies(sweep, result_dir, storage)
        finally:
            if started_here:
                ray.shutdown()
    done = not sweep.missing() and not sweep.refine_pending()
    write_manifest(result_dir, sweep_id, plan, "finished" if done else "running")
    return sweep
