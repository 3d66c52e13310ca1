"""The driver's ledger of one sweep: its (node, trial) pairs, which of them the store already holds,
writing each row as it arrives, and the progress line.

A pair's identity is `node/study/config_key/repeat`: the same plan point measured on two nodes, or twice on one
node, is two trials. The store, written atomically row by row, is the truth about which pairs are done.

Studies share configs (the baseline is a point of most of them): a config runs once per node and repeat, and its row
is recorded for every study that holds it, the copies naming the measuring pair in `shared_from`. A pair whose
measuring pair is already stored but which lacks its own row (a driver killed between the two writes) runs itself.
"""

from __future__ import annotations

import json
import math
import socket
import time

from sweep.plan import CONTROL_STUDY, Trial
from sweep.refine import bend_score_of
from sweep.results.store import Store
from trainables.columns import base_row, now_iso
from trainables.config import TrialConfig, format_assignments

PAIR_PHASES = ("grid", CONTROL_STUDY)  # the phases of the manifest's pairs; refine, autotune and ab are proposed


def pair_identity(node: str | None, study: str, config_key: str, repeat: int | None = 0) -> str:
    return f"{node or ''}/{study}/{config_key}/{repeat or 0}"


def pair_of(
    index: int | None,
    node: str,
    host: str,
    trial: Trial,
    *,
    repeat: int = 0,
    trial_order: int | None = None,
    order_seed: int | None = None,
) -> dict:
    """One (node, trial, repeat) pair as the manifest, Tune and the rows see it; `index`: the trial's place in the
    plan (None for a control point), `trial_order`: its place in the node's order (None: recorded, not run)."""
    return {
        "index": index,
        "node": node,
        "host": host,
        "study": trial.study,
        "point": trial.point,
        "phase": CONTROL_STUDY if trial.study == CONTROL_STUDY else "grid",
        "config": trial.config.to_dict(),
        "unsupported": trial.unsupported,
        "repeat": repeat,
        "trial_order": trial_order,
        "order_seed": order_seed,
        "identity": pair_identity(node, trial.study, trial.config_key, repeat),
        "reference": trial.reference,
    }


def pair_key(pair: dict) -> str:
    """The config_key of a pair: the third part of its identity."""
    return pair["identity"].split("/")[-2]


def pair_columns(pair: dict) -> dict:
    """The columns a pair's row takes from the pair: which trial of the plan, which repeat, where in the order."""
    return {
        "study": pair["study"],
        "trial_index": pair["index"],
        "point": json.dumps(pair["point"]),
        "phase": pair.get("phase", "grid"),
        "repeat": pair.get("repeat", 0),
        "trial_order": pair.get("trial_order"),
        "order_seed": pair.get("order_seed"),
        "reference": json.dumps(pair["reference"]) if pair.get("reference") else None,
        "measure_rule": pair.get("measure_rule"),
    }


class SweepLedger:
    def __init__(
        self,
        sweep_id: str,
        plan_name: str,
        store: Store,
        *,
        pairs: list[dict] | None = None,
        node_columns: dict[str, dict] | None = None,
        refinements: dict[str, dict] | None = None,
        order: dict | None = None,
        quiet: bool = False,
        expected: int | None = None,
    ):
        self.sweep_id, self.plan_name, self.store, self.quiet = sweep_id, plan_name, store, quiet
        self.pairs = pairs or []
        self.order = order or {}  # the plan's repeats, order_seed and control_every, for the manifest
        # some point runs more than once (repeats, or control points): the progress line numbers them
        self.repeated = any(pair.get("repeat") for pair in self.pairs)
        self.node_columns = node_columns or {}  # node IP -> host and fingerprint columns read on the node
        self.refinements = refinements or {}  # study -> its refinement: {"axis", "points", "base"}
        # rows this sweep will record: every pair plus each node's refined points (or what the caller says)
        refined = sum(r["points"] for r in self.refinements.values()) * max(len(self.node_columns), 1)
        self.expected = expected if expected is not None else len(self.pairs) + refined
        self.done = store.identities(sweep_id)
        self.by_identity = {pair["identity"]: i for i, pair in enumerate(self.pairs)}
        self.started = time.perf_counter()
        self.recorded_here = 0
        self.shared_here = 0  # of those, copies of a measurement another study's pair made
        self.steps_s = 0.0  # time inside warm-up + measured steps of the trials run by this driver
        self.wall_time = None  # a run's sweep/results/wall_time.py WallTime, fed each row recorded
        self.lost_nodes: set[str] = set()
        self.budget = None  # a budgeted sweep's sweep/budget.py Budget (None: no budget)
        self.write_error: OSError | None = None  # a row the store could not write (a full disk): the sweep stops
        # (node, config_key) -> (seconds of a trial's cycle outside its measured steps, step time, the whole cycle) per
        # measured trial
        # this driver recorded: a cycle runs from the node's previous record to this one (Tune and the launcher in)
        self.cycles: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
        self._last_record: dict[str, float] = {}

    @property
    def nodes(self) -> list[str]:
        return list(self.node_columns)

    def record(self, row: dict) -> dict | None:
        """Write the row to the store; returns it as written (None: a grid pair the store already holds)."""
        identity = pair_identity(row.get("node"), row["study"], row["config_key"], row.get("repeat"))
        # never a duplicate pair row, whatever Tune replays; a searcher may measure a point twice
        if identity in self.done and row.get("phase", "grid") in PAIR_PHASES:
            return None
        # the node's columns (read there before the sweep) fill what this row lacks, e.g. a failed trial's
        row = self.node_columns.get(row.get("node"), {}) | row
        row |= {"sweep": self.sweep_id, "plan": self.plan_name, "recorded_at": now_iso()}
        row.setdefault("phase", "grid")
        if row["phase"] == "refine":
            row["bend_score"] = self._bend_score(row)
        row.setdefault("host", socket.gethostname())
        try:
            self.store.append(row)
        except OSError as exc:  # raised inside Tune's controller, which wraps it: the runner raises it as it is
            self.write_error = exc
            raise
        self.done.add(identity)
        self.recorded_here += 1
        self.shared_here += bool(row.get("shared_from"))
        if row.get("status") == "ok" and not row.get("shared_from"):
            self.steps_s += row["timed_region_s"] - row["time_to_first_step_s"]
            self._time_cycle(row)
        if self.wall_time is not None:
            self.wall_time.add_row(row)
        self._progress(row)
        self._record_shares(identity, row)
        return row

    def _time_cycle(self, row: dict) -> None:
        now, node = time.perf_counter(), str(row.get("node"))
        previous, self._last_record[node] = self._last_record.get(node), now
        if previous is not None and row.get("measured_region_s") is not None:
            outside = max(now - previous - row["measured_region_s"], 0.0)
            cycle = (outside, row["step_time_median_s"], now - previous)
            self.cycles.setdefault((node, row["config_key"]), []).append(cycle)

    def expected_s(self, index: int) -> float | None:
        """How long pair `index` should take, start to record: its config's median cycle outside the measured steps
        (else the node's) plus the steps it will measure (`measure` of a later round, else as before); None while its
        node has no timed cycle."""
        pair, node = self.pairs[index], str(self.pairs[index]["node"])
        key = pair_key(pair)
        own = self.cycles.get((node, key))
        pool = own or [c for (n, _), cycles in self.cycles.items() if n == node for c in cycles]
        if not pool:
            return None
        outside = sorted(c[0] for c in pool)[len(pool) // 2]
        config = pair["config"] | pair.get("measure", {})
        steps, seconds = config.get("measure_steps"), config.get("measure_seconds") or math.inf
        step_s = sorted(c[1] for c in own)[len(own) // 2] if own else None
        measured = min(steps * step_s, seconds) if step_s and steps else seconds
        return outside + (measured if math.isfinite(measured) else 0.0)

    def node_cycle_s(self, node: str) -> float | None:
        """The median time a trial of this node took, start to record (None before one was timed here)."""
        cycles = sorted(c[2] for (n, _), cs in self.cycles.items() if n == node for c in cs)
        return cycles[len(cycles) // 2] if cycles else None

    def drop(self, indices: list[int], reason: str) -> None:
        """Pairs a budget left out: never run, not missing, and the pairs they would have measured for too."""
        dropped = set(indices)
        for i, pair in enumerate(self.pairs):
            if i in dropped or pair.get("measured_by") in dropped:
                pair["dropped"] = reason

    def _record_shares(self, identity: str, row: dict) -> None:
        """The same measurement as the row of every other study holding the config (this node, this repeat)."""
        index = self.by_identity.get(identity)
        if index is None or row.get("phase", "grid") != "grid":
            return
        for other in self.pairs[index].get("shares", []):
            copy = row | pair_columns(self.pairs[other]) | {"shared_from": identity}
            self.record({k: v for k, v in copy.items() if k not in ("sweep", "plan", "recorded_at")})

    def _bend_score(self, row: dict) -> float | None:
        """The bend score of the interval the refined point fell in, from the points this node measured before."""
        axis, value = next(iter(json.loads(row["point"]).items()))
        before = [
            r
            for r in self.store.rows(self.sweep_id)
            if r["study"] == row["study"] and r["status"] == "ok" and r.get("node") == row.get("node")
        ]
        xs = [json.loads(r["point"])[axis] for r in before]
        return bend_score_of(value, xs, [r["step_time_median_s"] for r in before])

    def record_failure(self, pair: dict, reason: str, status: str = "failed") -> None:
        """A row for a pair that produced none itself (Ray lost it, or the node cannot run it)."""
        cfg = TrialConfig(**pair["config"])
        row = base_row(cfg) | pair_columns(pair)
        if pair.get("node"):
            row |= {"node": pair["node"], "host": pair.get("host") or row["host"]}
        self.record(row | {"status": status, "error": reason, "finished_at": now_iso()})

    def _progress(self, row: dict) -> None:
        if self.quiet:
            return
        total, done = self.expected, len(self.done)
        elapsed = time.perf_counter() - self.started
        eta = elapsed / max(self.recorded_here, 1) * max(total - done, 0)
        if self.budget is not None:  # racing adds rounds as the budget allows: the budget's end is the ETA
            eta = max(self.budget.left_s(), 0.0)
        point = format_assignments(json.loads(row.get("point") or "{}")) or "baseline"
        if row.get("phase") in PAIR_PHASES and self.repeated:
            point += f" #{row.get('repeat') or 0}"
        if row.get("shared_from"):
            point += " (shared)"
        if row["status"] == "ok":
            what = f"{row['step_time_median_s'] * 1e3:8.1f} ms/step {row['tokens_per_s']:9,.0f} tok/s"
        else:
            what = f"{row['status']}: {str(row.get('error'))[:80]}"
        where = f"{row.get('host')} ({row.get('node')}) " if len(self.node_columns) > 1 else ""
        print(
            f"[{done}/{total}] {where}{row['study']:<16} {point:<28} {what}  | {elapsed:6.0f} s, ETA {eta:5.0f} s",
            flush=True,
        )

    def missing(self) -> list[int]:
        """Pairs to run: a pair another measures for it waits for that one, unless that one is already stored."""
        return [
            i
            for i, pair in enumerate(self.pairs)
            if pair["identity"] not in self.done
            and not pair.get("dropped")
            and (pair.get("measured_by") is None or self.pairs[pair["measured_by"]]["identity"] in self.done)
        ]

    def missing_on(self, nodes: set[str]) -> list[int]:
        return [i for i in self.missing() if self.pairs[i]["node"] in nodes]

    def pending_by_node(self, indices: list[int]) -> dict[str, list[int]]:
        """These pairs per node, in the sweep's order (a manifest written before the order: the plan's order)."""
        pending: dict[str, list[int]] = {}
        for i in sorted(indices, key=lambda i: (self.pairs[i].get("trial_order") or 0, i)):
            pending.setdefault(self.pairs[i]["node"], []).append(i)
        return pending

    def refine_pending(self) -> bool:
        """A refining study still short of its points on a node (and with a grid to refine between)."""
        if not self.refinements:
            return False
        rows = self.store.rows(self.sweep_id)
        for node in self.nodes:
            mine = [r for r in rows if r.get("node") == node]
            for study, refinement in self.refinements.items():
                refined = sum(r["study"] == study and r.get("phase") == "refine" for r in mine)
                # distinct points: two repeats of one point give nothing to refine between
                grid_ok = {
                    r["point"]
                    for r in mine
                    if r["study"] == study and r.get("phase", "grid") == "grid" and r["status"] == "ok"
                }
                if refined < refinement["points"] and len(grid_ok) >= 2:
                    return True
        return False
