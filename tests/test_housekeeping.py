"""Housekeeping CPUs (hwctl/housekeeping.py): which CPUs Ray's own processes are pinned to, the default count,
pinning real processes, the trial's CPUs without them, and a real sweep with `--housekeeping-cpus 1`."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

import sweep.tuning
from hwctl.housekeeping import (
    HOUSEKEEPING_ENV,
    NODE_CPUS_ENV,
    default_count,
    housekeeping_count,
    housekeeping_cpus,
    pin_processes,
    process_on_cpus,
    split_node_cpus,
)
from sweep.plan import expand_plan
from sweep.results.store import Store
from tests.bench_process import TINY_BASELINE, run_bench, write_plan
from tests.test_cores import make_sysfs
from trainables.config import build_config

CPUS = sorted(os.sched_getaffinity(0))
two_cpus = pytest.mark.skipif(len(CPUS) < 2, reason="needs 2 CPUs: one for the trial, one for Ray's processes")


@pytest.mark.parametrize("cpus, expected", [(1, 0), (2, 0), (3, 0), (4, 1), (16, 1)])
def test_default_count_sets_one_cpu_aside_from_four_cpus_on(cpus, expected):
    assert default_count(cpus) == expected


def test_the_variable_overrides_the_default_and_a_bad_one_is_named(monkeypatch):
    monkeypatch.delenv(HOUSEKEEPING_ENV, raising=False)
    assert (housekeeping_count(2), housekeeping_count(16)) == (0, 1)
    monkeypatch.setenv(HOUSEKEEPING_ENV, "3")
    assert housekeeping_count(16) == 3
    with pytest.raises(ValueError, match=r"--housekeeping-cpus 3: must be 0 to 1 \(this node has 2 CPUs"):
        housekeeping_count(2)
    monkeypatch.setenv(HOUSEKEEPING_ENV, "two")
    with pytest.raises(ValueError, match="BENCH_HOUSEKEEPING_CPUS='two': must be an integer from 0 to 15"):
        housekeeping_count(16)


def test_without_smt_the_last_cpus(tmp_path):
    allowed = make_sysfs(tmp_path, sockets=1, cores=16, smt=1)
    assert housekeeping_cpus(0, allowed, tmp_path) == []
    assert housekeeping_cpus(1, allowed, tmp_path) == [15]
    assert housekeeping_cpus(2, allowed, tmp_path) == [14, 15]
    # of the CPUs the node allows: a cpuset of 0-5 sets 5 aside
    assert housekeeping_cpus(1, set(range(6)), tmp_path) == [5]


def test_with_smt_whole_physical_cores(tmp_path):
    # 2 sockets x 4 cores x 2 threads, Linux numbering: cpu 7 is socket 1's core 3, cpu 15 its sibling
    allowed = make_sysfs(tmp_path, sockets=2, cores=4, smt=2)
    assert housekeeping_cpus(1, allowed, tmp_path) == [7, 15]
    assert housekeeping_cpus(2, allowed, tmp_path) == [7, 15]  # one core holds both
    assert housekeeping_cpus(3, allowed, tmp_path) == [6, 7, 14, 15]
    # a core whose sibling the node does not allow counts with the CPU it has
    assert housekeeping_cpus(1, allowed - {15}, tmp_path) == [7]


def test_a_count_that_leaves_no_cpu_to_the_trials_is_refused(tmp_path):
    allowed = make_sysfs(tmp_path, sockets=1, cores=1, smt=2)  # one core, two threads
    with pytest.raises(ValueError, match=r"--housekeeping-cpus 2: must be 0 to 1"):
        housekeeping_cpus(2, allowed, tmp_path)
    with pytest.raises(ValueError, match=r"take CPUs 0,1, every CPU of this node \(0,1\); a trial needs one"):
        housekeeping_cpus(1, allowed, tmp_path)


def test_pinning_a_real_child_process_every_thread():
    child = subprocess.Popen(["sleep", "30"])
    try:
        proc = psutil.Process(child.pid)
        pinning = pin_processes([proc], [CPUS[-1]])
        assert pinning.pinned == [child.pid] and pinning.failed == {}
        assert proc.cpu_affinity() == [CPUS[-1]]
        assert [os.sched_getaffinity(t.id) for t in proc.threads()] == [{CPUS[-1]}] * proc.num_threads()
    finally:
        child.kill()
        child.wait()


def test_pinning_says_which_process_was_gone_and_which_it_may_not_move(monkeypatch):
    gone = subprocess.Popen(["true"])
    gone_proc = psutil.Process(gone.pid)
    gone.wait()
    assert pin_processes([gone_proc], CPUS).failed == {gone.pid: "gone"}

    def refuse(pid, cpus):
        raise PermissionError(1, "Operation not permitted")

    child = subprocess.Popen(["sleep", "30"])
    try:
        monkeypatch.setattr(os, "sched_setaffinity", refuse)
        pinning = pin_processes([psutil.Process(child.pid)], CPUS)
    finally:
        child.kill()
        child.wait()
    assert (pinning.pinned, pinning.failed) == ([], {child.pid: "permission denied"})


@two_cpus
def test_process_on_cpus_moves_every_thread_and_puts_them_back():
    before, release = os.sched_getaffinity(0), threading.Event()
    started = threading.Thread(target=release.wait)  # like OpenMP's threads, started inside the block
    with process_on_cpus([CPUS[0]]):
        assert all(os.sched_getaffinity(t.id) == {CPUS[0]} for t in psutil.Process().threads())
        started.start()
    try:
        assert os.sched_getaffinity(0) == before and os.sched_getaffinity(started.native_id) == before
    finally:
        release.set()
        started.join()


@two_cpus
def test_the_trials_cpus_exclude_the_housekeeping_ones(monkeypatch):
    monkeypatch.setenv(HOUSEKEEPING_ENV, "1")
    monkeypatch.setenv(NODE_CPUS_ENV, ",".join(map(str, CPUS)))
    housekeeping, trial = split_node_cpus()
    assert housekeeping == [CPUS[-1]] and trial == set(CPUS[:-1])
    # a plan's 'all' cores is the trials' CPUs
    plan = {"name": "t", "baseline": TINY_BASELINE, "studies": [{"name": "cores", "axis": "cores", "values": "1..all"}]}
    assert [t.config.cores for t in expand_plan(plan, "t.yaml").trials] == list(range(1, len(CPUS)))


@two_cpus
def test_the_trials_actor_pins_itself_there_and_hands_the_trial_the_rest(monkeypatch):
    """tune_trial's body: the actor's threads to the housekeeping CPUs, run_trial told the trial's CPUs."""
    monkeypatch.setenv(HOUSEKEEPING_ENV, "1")
    monkeypatch.setenv(NODE_CPUS_ENV, ",".join(map(str, CPUS)))
    seen = {"pinned": [], "thread": []}
    monkeypatch.setattr(sweep.tuning, "pin_processes", lambda procs, cpus: seen["pinned"].append(sorted(cpus)))
    monkeypatch.setattr(os, "sched_setaffinity", lambda pid, cpus: seen["thread"].append(sorted(cpus)))

    def fake_run_trial(cfg, *, allowed_cpus, **_):
        seen["allowed"] = allowed_cpus
        return {"status": "ok"}

    monkeypatch.setattr(sweep.tuning, "run_trial", fake_run_trial)
    row = sweep.tuning._run_off_housekeeping(build_config(dict(TINY_BASELINE)))
    assert row == {"status": "ok", "housekeeping_cpus": str(CPUS[-1])}
    assert seen["allowed"] == set(CPUS[:-1]) and seen["pinned"] == [[CPUS[-1]]]
    # the thread that starts the worker: on the trial's CPUs while it does, then back with the rest of the actor
    assert seen["thread"] == [CPUS[:-1], [CPUS[-1]]]


def test_bench_refuses_a_count_that_leaves_no_cpu(tmp_path):
    done = run_bench("run", "--plan", "smoke", "--housekeeping-cpus", str(len(CPUS)), "--result-dir", str(tmp_path))
    assert done.returncode == 2
    assert done.stdout.strip() == (
        f"bench.py: error: --housekeeping-cpus {len(CPUS)}: must be 0 to {len(CPUS) - 1} "
        f"(this node has {len(CPUS)} CPUs; a trial needs one)"
    )
    assert not Path(tmp_path / "trials").exists()


@two_cpus
def test_a_sweep_with_one_housekeeping_cpu_keeps_its_trial_off_it(tmp_path):
    """A real local Ray: its processes on the last CPU, the trial on the rest, the dashboard on by default."""
    plan = write_plan(tmp_path / "hk.yaml", [{"name": "cores", "axis": "cores", "values": "1..all"}])
    with socket.socket() as free:  # a dashboard on 8265 may be someone else's
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    started = time.monotonic()
    done = run_bench(
        *("run", "--plan", str(plan), "--result-dir", str(tmp_path / "store")),
        *("--housekeeping-cpus", "1", "--dashboard-port", str(port)),
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    housekeeping, trial = str(CPUS[-1]), ",".join(map(str, CPUS[:-1]))
    assert f"housekeeping CPUs {housekeeping}: the driver and Ray's " in done.stdout and "not pinned" not in done.stdout
    assert f"Ray dashboard: http://127.0.0.1:{port}" in done.stdout  # on by default with a housekeeping CPU
    rows = Store(tmp_path / "store").rows()
    assert [r["cores"] for r in rows] == list(range(1, len(CPUS)))  # 'all' is the trial's CPUs
    for row in rows:
        assert row["status"] == "ok", row.get("error")
        assert row["housekeeping_cpus"] == housekeeping
        assert row["affinity_read_back"] == trial  # the worker's own mask, read back as it started
        assert row["node_cpus"] == len(CPUS)
    print(f"sweep with a housekeeping CPU: {time.monotonic() - started:.0f} s")
