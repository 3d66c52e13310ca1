"""Two runs at once, as real processes: a second sweep on the machine (another store) or on the store is refused with
one line naming the first, `--queue` waits for it and then runs; a lock dies with its holder, kill -9 included."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from sweep.run_lock import RunBusy, exclusive_run, machine_lock_path
from tests.bench_process import kill_session, start_bench, write_plan
from tests.conftest import REPO_ROOT

HOLD = (
    "import sys, time; from pathlib import Path; from sweep.run_lock import exclusive_run\n"
    "with exclusive_run(Path(sys.argv[1]), local=sys.argv[2] == 'local'):\n"
    "    print('held', flush=True); time.sleep(120)\n"
)


def holder(result_dir, local: bool) -> subprocess.Popen:
    """A process that holds the locks as a running sweep does, until killed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(result_dir), "local" if local else "cluster"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_on_the_machine_or_the_store_is_refused_naming_the_first(tmp_path):
    first = holder(tmp_path / "a", local=True)
    try:
        with pytest.raises(RunBusy) as machine:  # another store, the same machine
            with exclusive_run(tmp_path / "b", local=True):
                pass
        text = str(machine.value)
        assert text.startswith("another sweep is measuring on this machine: sweep (starting) (pid ")
        assert f"(pid {first.pid}, started 20" in text and f"store {(tmp_path / 'a').resolve()})" in text
        assert text.endswith("bench.py run --queue waits for it to end")
        with pytest.raises(RunBusy, match="measuring on this store"):  # a cluster run (no machine lock), one store
            with exclusive_run(tmp_path / "a", local=False):
                pass
        with exclusive_run(tmp_path / "c", local=False):  # a cluster run on another store goes ahead
            pass
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    with exclusive_run(tmp_path / "b", local=True):  # kill -9 released it: no lock is ever left behind
        holder_info = json.loads(machine_lock_path().read_text())
        assert holder_info["pid"] == os.getpid()


def test_bench_run_refuses_then_queues_behind_a_running_sweep(tmp_path):
    plan = write_plan(tmp_path / "p.yaml", [{"name": "width", "axis": "width", "values": [32, 64]}], name="lock")
    first = holder(tmp_path / "a", local=True)
    try:
        refused = subprocess.run(
            [sys.executable, "bench.py", "run", "--plan", str(plan), "--result-dir", str(tmp_path / "b")],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert refused.returncode == 2
        assert f"bench.py: error: another sweep is measuring on this machine: sweep (starting) (pid {first.pid}" in (
            refused.stderr
        )
        assert not (tmp_path / "b" / "trials").exists()  # refused before Ray started or anything was written
        queued = start_bench("run", "--plan", str(plan), "--result-dir", str(tmp_path / "b"), "--queue")
        before = []
        while not any("waiting for it to end (--queue)" in line for line in before):
            before.append(queued.stdout.readline())
            assert before[-1] or queued.poll() is None, "".join(before)[-3000:]
        time.sleep(2)
        assert queued.poll() is None and not (tmp_path / "b" / "trials").exists()  # waiting, not refused
        first.send_signal(signal.SIGTERM)
        first.wait()
        out, _ = queued.communicate(timeout=300)
        assert queued.returncode == 0, out[-3000:]
        assert len(list((tmp_path / "b" / "trials").glob("**/*.parquet"))) == 2
    finally:
        if first.poll() is None:
            first.kill()
        if "queued" in locals():
            kill_session(queued)
