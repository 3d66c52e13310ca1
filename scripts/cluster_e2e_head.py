#!/usr/bin/env python3
"""The head's part of `make cluster-e2e`: wait for both nodes, sweep a tiny plan on each, check each node's rows.

scripts/cluster_e2e.py (the launcher, on this machine) runs it on the head through `ray exec`, from the
head's copy of the repository (~/cpu-pretrain-bench): `bench.py run --address ... --nodes all` must leave
every trial of the plan, with status ok, from every expected node.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

import ray
import yaml

# The launcher's phase timings and command echo, so both sides' output reads alike (scripts/ is this
# script's sys.path[0]).
from cluster_e2e_steps import E2eError, Phases, run

REPO = Path(__file__).resolve().parent.parent
NODE_WAIT_S = 300.0
# Two tiny trials (a second or two each), run once on every node.
PLAN = {
    "name": "cluster-e2e",
    "description": "two tiny trials on every node of the cluster",
    "baseline": dict(
        depth=1, width=32, heads=2, seq_len=16, batch_size=2, vocab_size=256, warmup_steps=1, measure_steps=2
    ),
    "studies": [{"name": "width", "axis": "width", "values": [32, 64]}],
}


def main_on_head(args) -> int:
    phases, expected = Phases("on-head"), set(args.expect.split(","))
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    plan, result_dir = work / "cluster-e2e.yaml", work / "result"
    plan.write_text(yaml.safe_dump(PLAN, sort_keys=False))
    try:
        with phases("wait for every node"):
            print(f"  nodes: {', '.join(sorted(wait_for_nodes(args.address, expected, NODE_WAIT_S)))}")
        with phases("bench.py run --nodes all"):
            bench = [sys.executable, "bench.py", "run", "--plan", plan, "--address", args.address, "--nodes", "all"]
            if run([*bench, "--result-dir", result_dir], cwd=REPO).returncode != 0:
                raise E2eError("bench.py run failed (output above)")
        with phases("rows from every node"):
            check_rows(result_dir, expected, trials=len(PLAN["studies"][0]["values"]))
    except E2eError as exc:
        print(f"[on-head] FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"[on-head] PASSED; wall time per phase:\n{phases.summary()}")
    return 0


def wait_for_nodes(address: str, expected: set[str], timeout_s: float) -> set[str]:
    ray.init(address=address, log_to_driver=False, logging_level="WARNING")
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            alive = {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
            if expected <= alive:
                return alive
            if time.monotonic() > deadline:
                raise E2eError(f"after {timeout_s:.0f} s the cluster has nodes {sorted(alive)}, not {sorted(expected)}")
            time.sleep(2)
    finally:
        ray.shutdown()


def check_rows(result_dir: Path, expected: set[str], trials: int) -> None:
    sql = (
        "SELECT node, host, count(*) AS trials, count(*) FILTER (WHERE status = 'ok') AS ok "
        "FROM trials GROUP BY node, host ORDER BY node"
    )
    query = [sys.executable, "bench.py", "query", sql, "--format", "json", "--result-dir", result_dir]
    out = run(query, cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        raise E2eError(f"bench.py query failed: {out.stderr.strip()}")
    rows = json.loads(out.stdout)
    for row in rows:
        print(f"  node {row['node']} ({row['host']}): {row['trials']} rows, {row['ok']} ok")
    nodes = {row["node"] for row in rows}
    if nodes != expected:
        raise E2eError(f"rows come from nodes {sorted(nodes, key=str)}, expected exactly {sorted(expected)}")
    short = [r["node"] for r in rows if r["trials"] != trials or r["ok"] != trials]
    if short:
        raise E2eError(f"nodes {short}: expected {trials} rows with status ok from each")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="cluster_e2e_head.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", required=True, help="the head's GCS, HOST:PORT")
    parser.add_argument("--expect", required=True, help="comma list of the node IPs the rows must come from")
    parser.add_argument("--work-dir", required=True, help="where the plan and its result store go")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM unwinds like Ctrl-C: ray.shutdown runs
    return main_on_head(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
