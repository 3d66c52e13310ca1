"""One plan across several Ray nodes: a real `ray.cluster_utils.Cluster` on this machine, one node per
loopback address (127.0.0.2, .3, .4) so each has its own IP, driven by `bench.py run --address`.

A node's CPUs are what its processes may run on: a node added while this process is confined to one
core has one core, so the same plan point can be supported on one node and not on another.
"""

from __future__ import annotations

import contextlib
import json
import os
import time

import psutil
import pytest
from ray._private import ray_constants
from ray.cluster_utils import Cluster

from sweep.results.store import Store
from tests.bench_process import kill_session, run_bench, start_bench, write_plan

HEAD, SECOND, THIRD = "127.0.0.2", "127.0.0.3", "127.0.0.4"


@contextlib.contextmanager
def confined_to(cpus: set[int]):
    """Processes started inside inherit this affinity (a raylet, and so every worker of its node)."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def add_node(cluster: Cluster, ip: str, cpus: set[int]):
    with confined_to(cpus):
        return cluster.add_node(num_cpus=len(cpus), node_ip_address=ip, include_dashboard=False)


@pytest.fixture(autouse=True)
def spawned_workers(monkeypatch):
    """Workers spawned under each node's raylet, as `measuring_on` looks for them: a forked worker's parent is the
    machine's preload server, which these nodes, all on one machine, would share (README: "The preloaded worker")."""
    monkeypatch.setenv("BENCH_PRELOAD", "0")


@pytest.fixture
def cluster():
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": len(os.sched_getaffinity(0)), "node_ip_address": HEAD, "include_dashboard": False},
    )
    try:
        yield cluster
    finally:
        cluster.shutdown()


def measuring_on(node) -> bool:
    """Whether a trial's worker process (`python -m trainables.worker`) runs under the node's raylet."""
    raylet = psutil.Process(node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid)
    for process in raylet.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "trainables.worker" in process.cmdline():
                return True
    return False


def rows_by_node(store: Store) -> dict[str, list[dict]]:
    by_node: dict[str, list[dict]] = {}
    for row in store.rows():
        by_node.setdefault(row["node"], []).append(row)
    return by_node


def test_the_plan_runs_once_on_every_node_with_per_node_validation(cluster, tmp_path):
    add_node(cluster, SECOND, {0})  # one core
    plan = write_plan(
        tmp_path / "nodes.yaml",
        [
            {"name": "width", "axis": "width", "values": [32, 48]},
            {"name": "threads", "axis": "threads", "values": [1, 2]},
        ],
        name="nodes",
    )
    store = Store(tmp_path / "store")
    unknown = run_bench(
        "run", "--plan", str(plan), "--address", cluster.address, "--nodes", "10.9.9.9", "--result-dir", str(store.root)
    )
    assert unknown.returncode == 2 and "no node 10.9.9.9 in the cluster (nodes: " in unknown.stdout
    assert f"({HEAD}), " in unknown.stdout and not store.files()
    done = run_bench("run", "--plan", str(plan), "--address", cluster.address, "--result-dir", str(store.root))
    assert done.returncode == 0, done.stdout[-3000:]
    by_node = rows_by_node(store)
    assert sorted(by_node) == [HEAD, SECOND]
    head, second = by_node[HEAD], by_node[SECOND]
    assert sorted((r["study"], r["status"]) for r in head) == [("threads", "ok")] * 2 + [("width", "ok")] * 2
    # threads=2 on a one-core node: an unsupported row with the reason, the rest of the plan ran there
    status = {(r["study"], json.loads(r["point"])[r["study"]]): r for r in second}
    assert status["threads", 2]["status"] == "unsupported"
    assert status["threads", 2]["error"] == "threads=2 exceeds the 1 cores available to this trial"
    assert [status[k]["status"] for k in (("threads", 1), ("width", 32), ("width", 48))] == ["ok"] * 3
    # each row names its node and carries that node's fingerprint and measured peaks
    for row in head + second:
        assert row["host"] and row["hw_cpu_model"] and row["hw_peak_gflops_fp32"] > 0 and row["hw_mem_bw_gbs"] > 0
        assert row["sweep"] == head[0]["sweep"]
    assert {r["hw_logical_cores"] for r in head + second} == {os.cpu_count()}  # the machine's, read on the node
    assert {r["node_cpus"] for r in head} == {len(os.sched_getaffinity(0))} and {r["node_cpus"] for r in second} == {1}
    # never two timed trials on one node at once
    for node_rows in by_node.values():
        spans = sorted((r["started_at"], r["finished_at"]) for r in node_rows if r["status"] == "ok")
        assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:], strict=False))
    assert "on 2 node(s)" in done.stdout and "report:" in done.stdout


def test_a_node_lost_mid_sweep_gives_a_failed_row_and_resume_fills_the_gaps(cluster, tmp_path):
    third = add_node(cluster, THIRD, {1})
    plan = write_plan(
        tmp_path / "lost.yaml",
        [{"name": "seed", "axis": "seed", "values": [0, 1, 2]}],
        name="lost",
        threads=1,
        measure_steps=10_000,
        measure_seconds=3,
    )
    store = Store(tmp_path / "store")
    proc = start_bench("run", "--plan", str(plan), "--address", cluster.address, "--result-dir", str(store.root))
    try:
        deadline = time.time() + 180
        while not any(r["node"] == THIRD for r in store.rows()):
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read()[-3000:]
            time.sleep(0.2)
        deadline = time.time() + 60
        while not measuring_on(third):  # the node's second trial is under way
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read()[-3000:]
            time.sleep(0.1)
        cluster.remove_node(third)
        out, _ = proc.communicate(timeout=240)
    finally:
        kill_session(proc)
    assert proc.returncode == 1, out[-3000:]  # finished on the others; trials are missing
    assert "still missing" in out and "--resume" in out
    by_node = rows_by_node(store)
    assert [r["status"] for r in by_node[HEAD]] == ["ok"] * 3
    lost = sorted(by_node[THIRD], key=lambda r: r["status"])
    assert [r["status"] for r in lost] == ["failed", "ok"]
    assert lost[0]["error"].startswith(f"node lost: {lost[1]['host']} ({THIRD}) left the cluster during the trial")

    add_node(cluster, THIRD, {1})  # the node is back: resume runs only its missing pair
    resumed = run_bench("run", "--resume", "--result-dir", str(store.root), "--address", cluster.address)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert "; 1 rows recorded by this run" in resumed.stdout
    by_node = rows_by_node(store)
    assert len(by_node[HEAD]) == 3  # nothing re-ran there
    assert sorted(r["status"] for r in by_node[THIRD]) == ["failed", "ok", "ok"]
    assert len({r["seed"] for r in by_node[THIRD]}) == 3  # the missing seed, not a repeat
