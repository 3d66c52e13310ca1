"""Ctrl-C of `bench.py run`, as a terminal sends it (SIGINT to the foreground process group): the trial in flight is
recorded as interrupted (never ok), no worker and no Ray process is left, the closing line says how to resume, and
`--resume` measures the interrupted trial and the missing ones: nothing lost, nothing duplicated."""

from __future__ import annotations

import os
import signal
import time

import psutil

from sweep.results.store import Store
from tests.bench_process import kill_session, run_bench, start_bench, write_plan
from tests.test_sweep_end_to_end import wait_for_rows
from trainables import preload

WIDTHS = [16, 32, 48, 64]


def workers_left(session: int, folder) -> list[psutil.Process]:
    """Processes of the interrupted run's session (its Ray), and its trial workers, in sessions of their own: spawned
    (their payload in the run's TMPDIR) or forked by its fork servers (a server's child carries its command line)."""
    left = []
    for p in psutil.process_iter(["cmdline", "ppid"]):
        try:
            command = " ".join(p.info["cmdline"] or [])
            forked = "trainables.preload_server" in command and psutil.Process(p.info["ppid"]).cmdline() == p.cmdline()
            ours = str(folder) in command
            if os.getsid(p.pid) == session or (ours and ("trainables.worker" in command or forked)):
                left.append(p)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return left


def test_ctrl_c_records_the_trial_in_flight_as_interrupted_and_resume_finishes(tmp_path):
    plan = write_plan(
        tmp_path / "int.yaml",
        [{"name": "width", "axis": "width", "values": WIDTHS}],
        name="int",
        measure_steps=100_000,
        measure_seconds=3,  # a trial long enough to be in flight when the signal comes
    )
    store = Store(tmp_path / "store")
    (tmp_path / "tmp").mkdir()
    # this run's workers and fork servers in folders of its own (Ray keeps /tmp: its socket paths have a length limit)
    own = {"TMPDIR": str(tmp_path / "tmp"), "RAY_TMPDIR": "/tmp", preload.DIR_VARIABLE: str(tmp_path / "preload")}
    proc = start_bench("run", "--plan", str(plan), "--result-dir", str(store.root), env=own)
    try:
        wait_for_rows(store, 2, proc)
        time.sleep(1.5)  # the next trial has started
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        kill_session(proc)
    assert proc.returncode == 130, out[-3000:]
    assert "bench.py: interrupted (rows written so far are kept: python bench.py run --resume continues)" in out
    rows = store.rows()
    statuses = sorted(r["status"] for r in rows)
    assert statuses.count("interrupted") == 1 and set(statuses) == {"ok", "interrupted"}, statuses
    interrupted = next(r for r in rows if r["status"] == "interrupted")
    assert "interrupted (Ctrl-C or SIGTERM) while this trial ran" in interrupted["error"]
    deadline = time.time() + 15
    while workers_left(proc.pid, tmp_path) and time.time() < deadline:
        time.sleep(0.5)
    assert workers_left(proc.pid, tmp_path) == []

    try:
        done = run_bench("run", "--resume", "--result-dir", str(store.root), env=own)
    finally:
        preload.stop_servers(tmp_path / "preload")
    assert done.returncode == 0, done.stdout[-3000:]
    rows = store.rows()
    ok = [r for r in rows if r["status"] == "ok"]
    assert sorted(r["width"] for r in ok) == WIDTHS  # nothing lost, nothing measured twice
    assert [r["width"] for r in rows if r["status"] == "interrupted"] == [interrupted["width"]]  # kept, not ok
    assert f"; {len(WIDTHS) - len(statuses) + 1} rows recorded by this run" in done.stdout
