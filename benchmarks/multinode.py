"""Time one plan on one node against the same plan on two nodes, and compare the two nodes.

The two nodes are a real `ray.cluster_utils.Cluster` on this machine: node A on 127.0.0.2 confined to
CPU 0, node B on 127.0.0.3 confined to CPU 1 (each node's processes inherit its affinity), so they
never share a core. `bench.py run --address` drives both, as it would drive separate hosts.

    venv/bin/python benchmarks/multinode.py [--plan benchmarks/plans/nodes-tiny.yaml] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ray.cluster_utils import Cluster  # noqa: E402

from sweep.results.store import Store  # noqa: E402

NODE_A, NODE_B = "127.0.0.2", "127.0.0.3"


def add_confined(cluster: Cluster, ip: str, cpu: int):
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})  # the node's raylet and every worker it starts inherit it
    try:
        cluster.add_node(num_cpus=1, node_ip_address=ip, include_dashboard=False)
    finally:
        os.sched_setaffinity(0, before)


def bench(*args: str) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "bench.py", *args], cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"bench.py {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return wall, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", default=str(REPO / "benchmarks" / "plans" / "nodes-tiny.yaml"))
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs two CPUs: one per node")
    cluster = Cluster()
    add_confined(cluster, NODE_A, 0)  # the first node added is the head
    add_confined(cluster, NODE_B, 1)
    results = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for label, nodes in (("one node", NODE_A), ("two nodes", "all")):
                out = Path(tmp) / label.replace(" ", "-")
                wall, _ = bench(
                    "run", "--plan", args.plan, "--address", cluster.address, "--nodes", nodes, "--result-dir", str(out)
                )
                rows = Store(out).rows()
                results[label] = {
                    "wall_s": round(wall, 1),
                    "rows": len(rows),
                    "ok": sum(r["status"] == "ok" for r in rows),
                    "nodes": sorted({r["node"] for r in rows}),
                    "trials_per_min": round(len(rows) / wall * 60, 2),
                }
                print(f"{label}: {results[label]}", flush=True)
            _, table = bench("compare", "--by", "node", "--result-dir", str(Path(tmp) / "two-nodes"))
            print(table)
            results["compare"] = table
    finally:
        cluster.shutdown()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
