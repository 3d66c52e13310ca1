"""Eager workers forked from a per-node fork server (trainables/preload.py) measure what spawned ones measure, a
server never serves another environment, and a forked worker is killed, and leaves nothing, as a spawned one is."""

import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from hwctl.allocator import find_allocator
from tests.conftest import REPO_ROOT
from trainables import preload
from trainables.config import build_config
from trainables.launcher import run_trial

# what a worker reads back about the process it ran in: a forked one must read the same
READ_BACK = (
    "config_key",
    "loss_first",
    "thread_pools",
    "allocator_loaded",
    "affinity_read_back",
    "thread_affinity",
    "omp_runtime",
    "torch_threads",
    "torch_interop_threads",
    "threads",
)


@pytest.fixture
def servers(tmp_path, monkeypatch):
    """Forking on, servers in a folder of the test's own; every server it started gone afterwards."""
    folder = tmp_path / "preload"
    monkeypatch.setenv(preload.DIR_VARIABLE, str(folder))
    monkeypatch.setenv(preload.ENABLE_VARIABLE, "1")
    yield folder
    pids = preload.stop_servers(folder) if folder.exists() else []
    gone, alive = psutil.wait_procs([psutil.Process(p) for p in pids if psutil.pid_exists(p)], timeout=15)
    assert alive == [], "a fork server outlived its socket file"


def server_pids(folder) -> list[int]:
    """The servers of `folder`, not the workers they forked (which carry the same command line)."""
    found = {
        p.pid: p.info["ppid"]
        for p in psutil.process_iter(["cmdline", "ppid"])
        if str(folder) in " ".join(p.info["cmdline"] or [])
    }
    return sorted(pid for pid, parent in found.items() if parent not in found)


def no_children_left(pid: int, wait_s: float = 5.0) -> bool:
    """The server reaps its child when the launcher hangs up: nothing of the trial survives."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if not psutil.Process(pid).children(recursive=True):
            return True
        time.sleep(0.1)
    return False


def test_a_forked_worker_reads_back_what_a_spawned_one_does(tiny, data_dir, tmp_path, servers, monkeypatch):
    cfg = build_config(tiny)
    first = run_trial(cfg, data_dir=data_dir, output_dir=tmp_path)
    again = run_trial(cfg, data_dir=data_dir, output_dir=tmp_path)
    monkeypatch.setenv(preload.ENABLE_VARIABLE, "0")
    spawned = run_trial(cfg, data_dir=data_dir, output_dir=tmp_path)
    for row in (first, again, spawned):
        assert row["status"] == "ok", row.get("error")
    assert (first["worker_start"], again["worker_start"], spawned["worker_start"]) == ("forked", "forked", "spawned")
    # the same seed, the same first loss; the same pools, allocator, masks and libgomp settings read back
    assert {k: first[k] for k in READ_BACK} == {k: spawned[k] for k in READ_BACK} == {k: again[k] for k in READ_BACK}
    assert first["thread_pools"]["openmp"] == first["torch_threads"] == first["threads"]
    # the first trial started the server (outside its wall_s), the second found it running
    assert first["preload_start_s"] > 0 and again["preload_start_s"] == 0 and spawned["preload_start_s"] is None
    # the forked worker's clock starts at the fork: no framework import left in its start-up
    assert again["import_s"] < 0.5 < spawned["import_s"]
    assert again["interpreter_start_s"] < 0.5


def test_each_round_forks_from_a_server_of_its_own(tiny, data_dir, tmp_path, servers):
    """A round's server never serves the next round (a forked child inherits its server's memory layout): the next
    round's first trial starts a new one and the old one goes; trials of one round share theirs."""
    cfg = build_config(tiny)
    rows, sockets = [], []
    for generation in (0, 0, 1):
        rows.append(run_trial(cfg, data_dir=data_dir, output_dir=tmp_path, preload_generation=generation))
        sockets.append(sorted(p.name for p in servers.glob("*.sock")))
    assert [r["worker_start"] for r in rows] == ["forked"] * 3, [r.get("error") for r in rows]
    assert rows[0]["preload_start_s"] > 0 and rows[1]["preload_start_s"] == 0 and rows[2]["preload_start_s"] > 0
    assert sockets[0] == sockets[1] and len(sockets[2]) == 1 and sockets[2] != sockets[0]
    assert [name.rsplit(".", 2)[1] for name in (sockets[0][0], sockets[2][0])] == ["0", "1"]
    assert rows[0]["loss_first"] == rows[2]["loss_first"]


@pytest.mark.skipif(find_allocator("jemalloc") is None, reason="jemalloc is not installed")
def test_another_allocator_or_thread_count_gets_a_server_of_its_own(tiny, data_dir, tmp_path, servers, monkeypatch):
    monkeypatch.setenv(preload.SERVERS_VARIABLE, "2")  # two servers a node: the third retires the one used longest ago
    pinned = tiny | {"threads": 1, "pinning": "compact"}
    rows, sockets = [], []
    for config in (pinned, pinned | {"allocator": "jemalloc"}, tiny):
        rows.append(run_trial(build_config(config), data_dir=data_dir, output_dir=tmp_path))
        sockets.append(sorted(p.name for p in servers.glob("*.sock")))
    assert [r["status"] for r in rows] == ["ok"] * 3, [r.get("error") for r in rows]
    assert [r["worker_start"] for r in rows] == ["forked"] * 3
    # each environment started its own server; the first went when the third came
    assert all(r["preload_start_s"] > 0 for r in rows)
    assert [len(names) for names in sockets] == [1, 2, 2]
    assert (
        sockets[0][0] in sockets[1]
        and sockets[0][0] not in sockets[2]
        and set(sockets[1]) - set(sockets[0]) <= set(sockets[2])
    )
    assert [r["allocator_loaded"] for r in rows] == ["glibc", find_allocator("jemalloc"), "glibc"]
    assert [r["torch_threads"] for r in rows] == [1, 1, rows[2]["threads"]]
    assert [r["omp_runtime"]["OMP_NUM_THREADS"] for r in rows] == ["1", "1", str(rows[2]["threads"])]


def test_the_key_is_every_variable_the_libraries_read():
    env = {"OMP_NUM_THREADS": "2", "PATH": "/usr/bin", "PYTEST_CURRENT_TEST": "a"}
    key = preload.server_key(env, sys.executable, "torch", [0, 1])
    assert preload.server_key(env | {"PYTEST_CURRENT_TEST": "b"}, sys.executable, "torch", [0, 1]) == key
    for other in (
        (env | {"OMP_NUM_THREADS": "1"}, sys.executable, "torch", [0, 1]),
        (env | {"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}, sys.executable, "torch", [0, 1]),
        (env, "/usr/bin/python3", "torch", [0, 1]),
        (env, sys.executable, "numpy", [0, 1]),
        (env, sys.executable, "torch", [0]),
    ):
        assert preload.server_key(*other) != key


def test_a_forked_worker_past_its_timeout_or_memory_cap_is_killed(tiny, data_dir, servers):
    endless = tiny | {"timeout_s": 1, "measure_steps": 1_000_000, "measure_seconds": 600}
    row = run_trial(build_config(endless), data_dir=data_dir, poll_s=0.1)
    assert (row["status"], row["error"], row["worker_start"]) == (
        "timeout",
        "timeout: still running after 1 s, killed",
        "forked",
    )
    assert row["wall_s"] < 8
    [server] = server_pids(servers)
    assert no_children_left(server)
    capped = run_trial(build_config(tiny | {"memory_cap_mb": 64}), data_dir=data_dir, poll_s=0.05)
    assert capped["status"] == "failed" and capped["worker_start"] == "forked"
    assert capped["error"].startswith("memory cap: worker used") and "memory_cap_mb=64" in capped["error"]
    assert no_children_left(server)


def test_a_killed_launcher_leaves_no_forked_worker_behind(tiny, data_dir, servers):
    endless = tiny | {"measure_steps": 1_000_000, "measure_seconds": 600}
    script = (
        "import sys; from pathlib import Path; from trainables.config import build_config; "
        "from trainables.launcher import run_trial; "
        f"run_trial(build_config({endless!r}), data_dir=Path({str(data_dir)!r}))"
    )
    launcher = subprocess.Popen([sys.executable, "-c", script], cwd=REPO_ROOT)
    try:
        deadline = time.monotonic() + 60
        while not (server_pids(servers) and psutil.Process(server_pids(servers)[0]).children()):
            assert time.monotonic() < deadline and launcher.poll() is None, "no forked worker started"
            time.sleep(0.2)
        [server] = server_pids(servers)
        launcher.send_signal(signal.SIGKILL)  # no finally runs: the server sees the hang-up and kills the worker
        launcher.wait()
        assert no_children_left(server)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()


def refused_within(path, wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(path))
            except ConnectionRefusedError:
                return True
        time.sleep(0.05)
    return False


def test_a_stale_socket_is_replaced(tiny, data_dir, tmp_path, servers):
    cfg = build_config(tiny)
    assert run_trial(cfg, data_dir=data_dir, output_dir=tmp_path)["worker_start"] == "forked"
    [old] = server_pids(servers)
    [sock] = servers.glob("*.sock")
    os.kill(old, signal.SIGKILL)  # a dead server: its socket file stays, nobody listens on it
    assert refused_within(sock, 10.0)  # once the kernel closed its files (its command line goes first)
    row = run_trial(cfg, data_dir=data_dir, output_dir=tmp_path)
    assert (row["status"], row["worker_start"]) == ("ok", "forked") and row["preload_start_s"] > 0
    assert server_pids(servers) != [old] and len(server_pids(servers)) == 1
    assert sorted(servers.glob("*.sock")) == [sock]
