"""The sweep manifest: what a sweep must run, written before the first trial so --resume needs nothing else."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from hwctl.files import atomic_write_text
from sweep.ledger import SweepLedger
from trainables.columns import now_iso

SWEEPS_DIR = "sweeps"


def new_sweep_id(plan_name: str, result_dir: Path) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    sweep_id, n = f"{plan_name}-{stamp}", 1
    while (result_dir / SWEEPS_DIR / f"{sweep_id}.json").exists():
        n += 1
        sweep_id = f"{plan_name}-{stamp}-{n}"
    return sweep_id


def write_manifest(result_dir: Path, sweep: SweepLedger, source: str, state: str) -> None:
    """Every (node, trial, repeat) pair of the sweep in its order, and each node's columns: --resume needs nothing
    else."""
    folder = result_dir / SWEEPS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {
        "sweep": sweep.sweep_id,
        "plan": sweep.plan_name,
        "source": source,
        "state": state,
        "updated_at": now_iso(),
        # "refine" and "trials" are the refinements and the pairs: the names older manifests were written with
        "refine": sweep.refinements,
        "order": sweep.order,  # repeats, order_seed, control_every; each pair holds its repeat and trial_order
        "nodes": sweep.node_columns,
        "trials": sweep.pairs,
    }
    if sweep.budget is not None:  # what a resumed run needs to spend only what is left (sweep/budget.py)
        manifest["budget"] = sweep.budget.to_manifest()
    atomic_write_text(folder / f"{sweep.sweep_id}.json", json.dumps(manifest, indent=1, default=str))


def load_manifest(result_dir: Path, sweep_id: str | None) -> dict:
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
    if "nodes" not in data:
        raise LookupError(f"sweep {data['sweep']} was written by an older bench.py that did not record nodes")
    for pair in data["trials"]:
        _pair_before_repeats(pair)
    return data


def _pair_before_repeats(pair: dict) -> None:
    """A pair of a manifest written before repeats ran once, as repeat 0, in the plan's order: say so, in place."""
    if "repeat" not in pair:
        pair |= {"repeat": 0, "trial_order": None, "order_seed": None, "identity": f"{pair['identity']}/0"}
