"""`bench.py trial`: a readable summary or one JSON object; bad input exits 2 with one line."""

import json
import subprocess
import sys

from tests.bench_process import run_bench
from tests.conftest import REPO_ROOT, TINY


def bench(*args):
    return subprocess.run(
        [sys.executable, "bench.py", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )


def test_bad_key_exits_2_with_one_line():
    done = bench("trial", "widht=512")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert done.stderr.startswith("bench.py: error: unknown key 'widht'")
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_bad_value_exits_2():
    done = bench("trial", "kv_heads=3")
    assert done.returncode == 2
    assert done.stderr.strip() == "bench.py: error: kv_heads=3 must divide heads=4"


def test_help_lists_commands():
    done = bench("--help")
    assert done.returncode == 0 and "trial" in done.stdout


def test_trial_json_and_summary():
    assignments = [f"{k}={v}" for k, v in TINY.items()]
    done = bench("trial", *assignments, "--json")
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)
    assert row["status"] == "ok" and row["width"] == 64 and row["loss_last"] > 0
    summary = bench("trial", *assignments)
    assert summary.returncode == 0
    assert "step_time_median_s" in summary.stdout and "mfu" in summary.stdout


def test_a_bad_plan_for_a_cluster_fails_before_connecting(tmp_path):
    plan = tmp_path / "bad.yaml"
    plan.write_text("name: bad\nbaseline: {depth: 2, widht: 3}\nstudies: [{name: w, axis: width, values: [32]}]\n")
    # nothing listens at this address: the plan's own problems are reported before any connection is tried
    done = run_bench("run", "--plan", str(plan), "--address", "127.0.0.9:9", "--result-dir", str(tmp_path / "s"))
    assert done.returncode == 2 and "baseline: key 'widht': unknown key" in done.stdout
    assert not (tmp_path / "s").exists()
