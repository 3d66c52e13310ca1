"""A store with a file that cannot be read: every reader goes on with the rest and names it once; `bench.py check`
lists it (and a file whose columns disagree with the registry) and moves it aside only when asked."""

import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sweep.results.report import write_report
from sweep.results.store import Store
from tests.bench_process import run_bench, write_plan
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


@pytest.fixture
def small_disk(tmp_path):
    """A 600 KB filesystem of its own (tmpfs; root only): room for a few rows, not for a sweep."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip() or 'not root'}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_stops_the_run_with_one_line_and_resume_finishes_once_there_is_room(tmp_path, small_disk):
    widths = [16, 32, 48, 64, 80, 96, 112, 128]
    plan = write_plan(tmp_path / "p.yaml", [{"name": "width", "axis": "width", "values": widths}], name="disk")
    result = small_disk / "r"
    full = run_bench("run", "--plan", str(plan), "--result-dir", str(result))
    assert full.returncode == 1, full.stdout[-3000:]
    assert "Traceback" not in full.stdout
    assert "MB free; this sweep's 8 rows and report need about" in full.stdout  # warned before the first trial
    line = next(ln for ln in full.stdout.splitlines() if ln.startswith("bench.py: error: cannot write "))
    assert line.endswith(": No space left on device (errno 28); once it can, python bench.py run --resume continues")
    assert f"{result}/trials/sweep=disk-" in line
    assert not [p for p in result.rglob("*") if p.name.endswith(".tmp")]  # no half-written file
    written = Store(result).rows()
    assert 0 < len(written) < len(widths) and {r["status"] for r in written} == {"ok"}
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)  # space freed
    done = run_bench("run", "--resume", "--result-dir", str(result))
    assert done.returncode == 0, done.stdout[-3000:]
    rows = Store(result).rows()
    assert sorted(r["width"] for r in rows) == widths  # nothing lost, nothing twice
