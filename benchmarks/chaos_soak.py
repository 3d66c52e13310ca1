"""Chaos soak: a plan of many tiny trials on a local multi-node Ray cluster while a killer stops a random worker node
every 20-40 s and starts it again, then `--resume` until the sweep is done; then the store is checked. The kills start once the
sweep's first row is stored (a node lost while a sweep is set up is left out of it, with a line: sweep/nodes.py).

    venv/bin/python benchmarks/chaos_soak.py [--points 40] [--kills 5] [--json out.json]

The cluster is a real `ray.cluster_utils.Cluster` on this machine: the head on 127.0.0.2 and two worker nodes on
127.0.0.3 and 127.0.0.4, each on one CPU (every node runs the whole plan, so --points 40 is 120 trials). A kill is
`Cluster.remove_node` (the raylet and every worker under it SIGKILLed, as a machine that dies); the node comes back
on the same address 3-8 s later. Checked, as Ray's own chaos release tests check their workloads:
- every (node, study, config_key, repeat) of the sweep's manifest (control points included) has exactly one ok row
  (nothing lost, nothing twice, nothing the plan did not ask for);
- no ok row of a killed node's trial spans a kill (a trial cut short is never recorded as measured);
- the failed rows (a trial the kill cut short: "node lost") and the resumes it took are counted.
Workers are spawned (BENCH_PRELOAD=0): the nodes share one machine, and a fork server would outlive its node.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ray.cluster_utils import Cluster  # noqa: E402

from sweep.results.store import Store  # noqa: E402

HEAD, WORKERS = "127.0.0.2", ("127.0.0.3", "127.0.0.4")
TINY = dict(depth=2, width=32, heads=2, seq_len=32, batch_size=2, vocab_size=512, warmup_steps=1, measure_steps=3)


def add_node(cluster: Cluster, ip: str, cpu: int | None):
    before = os.sched_getaffinity(0)
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})  # the node's raylet and every worker it starts inherit it
    try:
        return cluster.add_node(
            num_cpus=1 if cpu is not None else len(before), node_ip_address=ip, include_dashboard=False
        )
    finally:
        os.sched_setaffinity(0, before)


class Killer:
    """Every `every` (min, max) seconds: remove a random worker node, start it again 3-8 s later. Driven from the
    main thread (Ray's node start installs signal handlers, which only the main thread may)."""

    def __init__(
        self, cluster: Cluster, nodes: dict, kills: int, every: tuple[float, float], store: Store, seed: int = 0
    ):
        self.cluster, self.nodes, self.kills, self.every, self.store = cluster, nodes, kills, every, store
        self.rng = random.Random(seed)
        self.next_at: float | None = None  # the first kill comes after the sweep's first row: it is under way
        self.log: list[dict] = []  # {"ip", "killed_at", "back_at"} (time.time())

    def tick(self) -> None:
        if self.next_at is None and self.store.files():
            self.next_at = time.time() + self.rng.uniform(*self.every)
        if len(self.log) >= self.kills or self.next_at is None or time.time() < self.next_at:
            return
        ip = self.rng.choice(sorted(self.nodes))
        killed_at = time.time()
        self.cluster.remove_node(self.nodes[ip])
        time.sleep(self.rng.uniform(3, 8))
        self.nodes[ip] = add_node(self.cluster, ip, WORKERS.index(ip) % len(os.sched_getaffinity(0)))
        self.log.append({"ip": ip, "killed_at": killed_at, "back_at": time.time()})
        self.next_at = time.time() + self.rng.uniform(*self.every)


def bench(killer: Killer, *args: str, timeout: float = 1800) -> tuple[int, str]:
    """bench.py ARGS to its end, the killer at work meanwhile; (exit status, output)."""
    env = os.environ | {"BENCH_PRELOAD": "0", "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen([sys.executable, "bench.py", *args], cwd=REPO, env=env, stdout=out, stderr=out)
        deadline = time.time() + timeout
        while proc.poll() is None:
            if time.time() > deadline:
                proc.kill()
            killer.tick()
            time.sleep(0.2)
        out.seek(0)
        return proc.returncode, out.read()


def soak(workdir: Path, points: int, kills: int, every: tuple[float, float], max_resumes: int = 10) -> dict:
    plan = workdir / "chaos.yaml"
    baseline = TINY | {"dataset": "offline", "threads": 1}
    plan.write_text(yaml.safe_dump({"name": "chaos", "baseline": baseline, "studies": [
        {"name": "seed", "axis": "seed", "values": list(range(points))}]}))  # fmt: skip
    store = Store(workdir / "store")
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "node_ip_address": HEAD, "include_dashboard": False},
    )
    started = time.time()
    try:
        nodes = {ip: add_node(cluster, ip, i % len(os.sched_getaffinity(0))) for i, ip in enumerate(WORKERS)}
        killer = Killer(cluster, nodes, kills, every, store)
        runs = [
            bench(killer, "run", "--plan", str(plan), "--address", cluster.address, "--result-dir", str(store.root))
        ]
        while runs[-1][0] != 0 and len(runs) <= max_resumes:
            if runs[-1][0] != 1:  # 1: finished with trials missing (a node was lost); anything else is a bug
                raise SystemExit("\n\n".join(f"bench.py run exited {code}:\n{out[-2500:]}" for code, out in runs))
            runs.append(bench(killer, "run", "--resume", "--address", cluster.address, "--result-dir", str(store.root)))
    finally:
        cluster.shutdown()
    return check(store, points, killer.log, runs, time.time() - started)


def check(store: Store, points: int, kills: list[dict], runs: list, wall_s: float) -> dict:
    """The store against the sweep's manifest: every pair (node/study/config_key/repeat, control points included)
    recorded, at most one ok row each, none extra, and no ok row spanning a kill of its node."""
    (manifest,) = (store.root / "sweeps").glob("*.json")
    planned = {pair["identity"] for pair in json.loads(manifest.read_text())["trials"]}
    rows = store.rows()
    ok = collections.Counter(
        f"{r['node']}/{r['study']}/{r['config_key']}/{r['repeat'] or 0}" for r in rows if r["status"] == "ok"
    )
    recorded = {f"{r['node']}/{r['study']}/{r['config_key']}/{r['repeat'] or 0}" for r in rows}
    spanning = [
        r for r in rows if r["status"] == "ok" for k in kills
        if r["node"] == k["ip"] and str(r["started_at"]) < iso(k["killed_at"]) < str(r["finished_at"])
    ]  # fmt: skip
    return {
        "trials_planned": len(planned),
        "ok_identities": len(set(ok) & planned),
        # a trial its node's death cut short is recorded failed ("node lost") and, like any failed trial, not re-run
        "failed_identities": len((recorded - set(ok)) & planned),
        "lost": len(planned - recorded),
        "extra": len(set(ok) - planned),
        "duplicates": sum(n - 1 for n in ok.values() if n > 1),
        "ok_per_node": dict(collections.Counter(key.split("/")[0] for key in ok)),
        "failed_rows": sum(r["status"] != "ok" for r in rows),
        "ok_rows_spanning_a_kill": len(spanning),
        "kills": len(kills),
        "runs": len(runs),
        "last_exit": runs[-1][0],
        "wall_s": round(wall_s, 1),
    }


def iso(seconds: float) -> str:
    """The rows' timestamp form (trainables.columns.now_iso: UTC, ISO 8601) of a time.time()."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=40, help="plan points (each node runs them all)")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-chaos-") as folder:
        figures = soak(Path(folder), args.points, args.kills, (20.0, 40.0))
    print(json.dumps(figures, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    ok = not (figures["lost"] or figures["extra"] or figures["duplicates"] or figures["ok_rows_spanning_a_kill"])
    sys.exit(0 if ok and figures["kills"] >= args.kills else 1)


if __name__ == "__main__":
    main()
