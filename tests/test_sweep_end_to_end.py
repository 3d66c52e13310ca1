"""Real sweeps through `bench.py run`: a local Ray instance, Ray Tune trials, rows in Parquet."""

import json
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from hwctl.housekeeping import default_count
from sweep.results.store import Store
from sweep.results.wall_time import load_breakdowns
from tests.bench_process import kill_session, run_bench, start_bench, write_plan
from trainables.columns import unknown_columns


def test_smoke_plan_end_to_end(tmp_path):
    done = run_bench("run", "--plan", "smoke", "--result-dir", str(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:]
    rows = Store(tmp_path).rows()
    assert len(rows) == 4
    assert sorted((r["study"], json.loads(r["point"])[r["study"]]) for r in rows) == [
        ("attention", "full"),
        ("attention", "sliding"),
        ("width", 32),
        ("width", 64),
    ]
    assert len({r["sweep"] for r in rows}) == 1 and rows[0]["sweep"].startswith("smoke-")
    for r in rows:
        assert r["status"] == "ok" and r["step_time_median_s"] > 0 and r["loss_last"] > 0
        assert r["hw_cpu_model"] and r["hw_logical_cores"] >= 1 and r["sw_torch"].startswith("2.13")
        assert json.loads(r["env"])["OMP_NUM_THREADS"] == str(r["threads"])
        assert r["node"] and r["host"] == socket.gethostname() and r["schema_version"] == 1
        assert unknown_columns(r) == [], "a stored column the registry (trainables/columns.py) lacks"
    # progress lines with an ETA, then the per-study summary with ratios to the first value
    assert "[4/4]" in done.stdout and "ETA" in done.stdout
    assert "study width" in done.stdout and "vs first" in done.stdout and "1.00x" in done.stdout
    # the dashboard is on by default only where a housekeeping CPU keeps its processes off the trials' CPUs
    if default_count(len(os.sched_getaffinity(0))) == 0:
        assert "Ray dashboard: off (bench.py run --dashboard turns it on to watch the trials live)" in done.stdout
    else:
        assert "Ray dashboard: http://127.0.0.1:8265" in done.stdout
    # the report is written at the end of each run: one plot per study
    report = tmp_path / "report" / rows[0]["sweep"]
    assert (
        f"report: {report / 'index.md'}" in done.stdout and f"page: {(report / 'index.html').as_uri()}" in done.stdout
    )
    assert "findings: no setting changed" in done.stdout or "findings (settings beyond" in done.stdout
    index = (report / "index.md").read_text()
    assert "width" in index and "attention" in index and "## Projections" in index
    pngs = list(report.glob("*.png"))
    assert len(pngs) >= 2 and all(p.read_bytes().startswith(b"\x89PNG") for p in pngs)
    # where the time went: printed, stored per sweep and in the report; its lines add up to the run's wall time, and
    # the trials' parts are the measured rows' own
    (run,) = load_breakdowns(tmp_path, rows[0]["sweep"])
    lines = {line["part"]: line["seconds"] for line in run["lines"]}
    assert sum(lines.values()) == pytest.approx(run["total_s"])
    measured = [r for r in rows if not r["shared_from"]]
    assert run["trials"] == len(measured) >= 2
    assert lines["trial: measured steps"] == pytest.approx(sum(r["measured_region_s"] for r in measured))
    assert all(seconds >= 0 for part, seconds in lines.items() if not part.startswith("the driver"))
    assert f"where the {run['total_s']:.0f} s went:" in done.stdout and "median fixed cost per trial" in done.stdout
    assert "## Where the time went" in index and "| trial: measured steps |" in index

    sql = "SELECT study, count(*) AS n FROM trials GROUP BY study ORDER BY study"
    query = run_bench("query", sql, "--format", "json", "--result-dir", str(tmp_path))
    assert query.returncode == 0
    assert json.loads(query.stdout.strip().splitlines()[-1]) == [
        {"study": "attention", "n": 2},
        {"study": "width", "n": 2},
    ]
    # running the same plan again appends a new sweep, never overwrites
    again = run_bench("run", "--plan", "smoke", "--result-dir", str(tmp_path))
    assert again.returncode == 0
    _, counts = Store(tmp_path).query("SELECT count(DISTINCT sweep), count(*) FROM trials")
    assert counts == [(2, 8)]


def other_addresses() -> list[str]:
    return [
        a.address
        for addrs in psutil.net_if_addrs().values()
        for a in addrs
        if a.family == socket.AF_INET and not a.address.startswith("127.")
    ]


def answers(host: str, port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://{host}:{port}/api/version", timeout=3)
        return True
    except urllib.error.HTTPError:
        return True  # 401 without the token: something answered
    except OSError:
        return False


def test_failures_become_rows_and_the_dashboard_stays_on_loopback(tmp_path):
    plan = write_plan(
        tmp_path / "fail.yaml",
        [
            {"name": "memory", "axis": "memory_cap_mb", "values": [64]},
            {"name": "timeout", "axis": "timeout_s", "values": [1]},
            {"name": "ok", "axis": "seed", "values": [0]},
        ],
        measure_steps=1000,
        measure_seconds=2,
    )
    port = 8365
    proc = start_bench(
        "run",
        "--plan",
        str(plan),
        "--result-dir",
        str(tmp_path / "store"),
        "--dashboard",
        "--dashboard-port",
        str(port),
    )
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("[1/3]"):  # mid-sweep
                assert answers("127.0.0.1", port)
                assert not any(answers(address, port) for address in other_addresses())
            if line.startswith("sweep ") and "inside warm-up" in line:
                break
        proc.wait(timeout=60)
    finally:
        kill_session(proc)
    assert proc.returncode == 0, "".join(lines)[-3000:]
    rows = {r["study"]: r for r in Store(tmp_path / "store").rows()}
    assert rows["memory"]["status"] == "failed" and rows["memory"]["error"].startswith("memory cap")
    # the worker needs about 2 s to import torch: a 1 s timeout always fires
    assert rows["timeout"]["status"] == "timeout", rows["timeout"]["error"]
    assert rows["timeout"]["error"] == "timeout: still running after 1 s, killed"
    assert rows["ok"]["status"] == "ok"


def wait_for_rows(store: Store, count: int, proc, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while len(store.files()) < count:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline, "no rows appeared"
        time.sleep(0.1)


def test_resume_after_the_driver_is_killed(tmp_path):
    plan = write_plan(
        tmp_path / "resume.yaml",
        [{"name": "width", "axis": "width", "values": [16, 32, 48, 64, 80, 96]}],
        name="resume",
    )
    store = Store(tmp_path / "store")
    proc = start_bench("run", "--plan", str(plan), "--result-dir", str(store.root))
    try:
        wait_for_rows(store, 2, proc)
    finally:
        kill_session(proc)  # kill -9 of the driver and everything it started
    before = {p.name: p.stat().st_mtime_ns for p in store.files()}
    assert 2 <= len(before) < 6

    done = run_bench("run", "--resume", "--result-dir", str(store.root))
    assert done.returncode == 0, done.stdout[-3000:]
    rows = store.rows()
    identities = [f"{r['study']}/{r['config_key']}" for r in rows]
    assert len(rows) == 6 and len(set(identities)) == 6  # nothing lost, nothing duplicated
    assert sorted(r["width"] for r in rows) == [16, 32, 48, 64, 80, 96]
    assert len({r["sweep"] for r in rows}) == 1
    after = {p.name: p.stat().st_mtime_ns for p in store.files()}
    assert all(after[name] == mtime for name, mtime in before.items())  # earlier rows untouched
    # only the missing trials ran again
    assert f"; {6 - len(before)} rows recorded by this run" in done.stdout
    nothing_left = run_bench("run", "--resume", "--result-dir", str(store.root))
    assert nothing_left.returncode == 2 and "no unfinished sweep to resume" in nothing_left.stdout
    assert Path(store.root / "sweeps").exists()
