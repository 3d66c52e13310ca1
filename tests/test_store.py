"""The Parquet store: one atomic file per row, hive partitions, DuckDB over all of it, crash safety."""

import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from sweep.results.store import SCHEMA_VERSION, EmptyStore, Store
from tests.conftest import REPO_ROOT


def row(i: int, sweep: str = "s-1", **extra) -> dict:
    return {
        "sweep": sweep,
        "host": "h1",
        "study": "width",
        "config_key": f"k{i}",
        "width": 64 * i,
        "status": "ok",
        "mfu": 0.5 if i % 2 else None,
        "step_times_s": [0.1, 0.2],
        "env": {"OMP_NUM_THREADS": "2"},
    } | extra


def test_rows_are_queryable_with_their_partitions(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(EmptyStore):
        store.query("SELECT 1 FROM trials")
    paths = [store.append(row(i)) for i in range(1, 5)]
    assert all(p.parent == tmp_path / "trials" / "sweep=s-1" / "host=h1" for p in paths)
    columns, rows = store.query(
        "SELECT sweep, host, count(*), sum(width), avg(mfu), max(schema_version) FROM trials GROUP BY 1, 2"
    )
    assert rows == [("s-1", "h1", 4, 640, 0.5, SCHEMA_VERSION)]
    stored = store.rows("s-1")
    assert sorted(r["config_key"] for r in stored) == ["k1", "k2", "k3", "k4"]
    assert stored[0]["env"] == '{"OMP_NUM_THREADS": "2"}' and list(stored[0]["step_times_s"]) == [0.1, 0.2]
    # rows without a node (written before rows named their node) have an empty node in their identity, and rows
    # without a repeat (written before repeats) are repeat 0
    assert store.identities("s-1") == {"/width/k1/0", "/width/k2/0", "/width/k3/0", "/width/k4/0"}
    store.append(row(5) | {"node": "10.0.0.9", "config_key": "k1"})  # the same config on another node
    assert store.identities("s-1") == {
        "/width/k1/0",
        "/width/k2/0",
        "/width/k3/0",
        "/width/k4/0",
        "10.0.0.9/width/k1/0",
    }
    assert len(store.dataframe()) == 5


def test_same_config_in_a_new_sweep_appends(tmp_path):
    store = Store(tmp_path)
    store.append(row(1, sweep="a"))
    store.append(row(1, sweep="b"))
    _, rows = store.query("SELECT sweep, config_key FROM trials ORDER BY sweep")
    assert rows == [("a", "k1"), ("b", "k1")]


def test_columns_that_differ_between_rows_are_unified(tmp_path):
    store = Store(tmp_path)
    store.append(row(1, error=None))
    store.append(row(2, status="failed", error="boom", stderr_tail="x"))
    _, rows = store.query("SELECT config_key, status, error, stderr_tail FROM trials ORDER BY config_key")
    assert rows == [("k1", "ok", None, None), ("k2", "failed", "boom", "x")]


WRITER = """
import sys
from sweep.results.store import Store
store = Store(sys.argv[1])
i = 0
while True:
    i += 1
    store.append({"sweep": "s", "host": "h", "study": "w", "config_key": f"k{i}", "blob": "x" * 200_000, "i": i})
"""


def test_store_stays_readable_after_a_crash_during_writes(tmp_path):
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], cwd=REPO_ROOT)
    store = Store(tmp_path)
    deadline = time.time() + 60
    while len(store.files()) < 20 and time.time() < deadline:
        time.sleep(0.05)
    os.kill(writer.pid, signal.SIGKILL)  # at a random point of some write
    writer.wait()
    files = store.files()
    assert len(files) >= 20
    for path in files:
        assert pq.read_table(path).num_rows == 1  # no half-written file under a .parquet name
    (files[0].parent / ".torn.parquet.tmp").write_bytes(b"PAR1 half a file")  # what a crash mid-write leaves
    _, rows = store.query("SELECT count(*), count(DISTINCT i) FROM trials")
    assert rows == [(len(files), len(files))]
