"""A store with a file that cannot be read: every reader goes on with the rest and names it once; `bench.py check`
lists it (and a file whose columns disagree with the registry) and moves it aside only when asked."""

import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq

from sweep.results.report import write_report
from sweep.results.store import Store
from tests.conftest import REPO_ROOT
from tests.test_report import SWEEP, ok_row


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "bench.py", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )


def store_with_garbage(tmp_path):
    """Three good rows of one sweep, one of another, and one file of a few bytes of garbage among them."""
    store = Store(tmp_path)
    files = [store.append(ok_row("width", i, {"width": 128 * 2**i}, 0.1 * (i + 1))) for i in range(3)]
    store.append(ok_row("depth", 0, {"depth": 2}, 0.2) | {"sweep": "other"})
    garbage = files[1].with_name("width-truncated.parquet")
    garbage.write_bytes(b"PAR1\x00\x01")
    return store, files, garbage


def test_readers_go_on_with_the_readable_files_and_name_the_bad_one_once(tmp_path, capsys):
    store, _, garbage = store_with_garbage(tmp_path)
    rows = store.rows()
    assert sorted(r["config_key"] for r in rows) == ["depth0", "width0", "width1", "width2"]
    assert store.identities(SWEEP) == {"/width/width0/0", "/width/width1/0", "/width/width2/0"}
    write_report(store, SWEEP)  # the report of the sweep is written from its readable rows
    err = capsys.readouterr().err
    assert err.count("unreadable file(s)") == 1, err  # named once, however many reads followed
    assert f"1 unreadable file(s) in {store.trials_dir} left out (width-truncated.parquet:" in err
    # the CLI too: exit 0, the rows, the one line
    done = bench("query", "SELECT count(*) AS n FROM trials", "--format", "csv", "--result-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["n", "4"]
    assert done.stderr.count("unreadable file(s)") == 1 and "bench.py check" in done.stderr
    assert garbage.exists()  # never moved without being asked


def test_a_row_whose_file_turned_unreadable_is_missing_to_a_resume(tmp_path):
    store, files, _ = store_with_garbage(tmp_path)
    files[2].write_bytes(files[2].read_bytes()[:40])  # truncated, as a copy cut short leaves it
    assert store.identities(SWEEP) == {"/width/width0/0", "/width/width1/0"}  # width2 is measured again


def test_check_lists_and_quarantines_only_when_asked(tmp_path):
    store, files, garbage = store_with_garbage(tmp_path)
    # a readable file whose step time is text where the registry says a float
    wrong = files[0].with_name("width-wrong-type.parquet")
    pq.write_table(pa.table({"study": ["width"], "config_key": ["w9"], "step_time_median_s": ["fast"]}), wrong)
    listed = bench("check", "--result-dir", str(tmp_path))
    assert listed.returncode == 1
    lines = listed.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"unreadable {garbage}: ")
    assert lines[1] == f"schema     {wrong}: step_time_median_s: string, the registry says double"
    assert "1 unreadable, 1 disagreeing with the registry, of 6 file(s)" in listed.stderr
    assert garbage.exists() and wrong.exists()
    moved = bench("check", "--quarantine", "--result-dir", str(tmp_path))
    assert moved.returncode == 0, moved.stderr
    quarantined = tmp_path / "quarantine" / garbage.relative_to(store.trials_dir)
    assert quarantined.read_bytes() == b"PAR1\x00\x01" and not garbage.exists() and not wrong.exists()
    clean = bench("check", "--result-dir", str(tmp_path))
    assert clean.returncode == 0 and "4 file(s), every one readable" in clean.stdout
