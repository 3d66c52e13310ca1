"""`bench.py trial`: a readable summary or one JSON object; bad input exits 2 with one line."""

import json
import os
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


def test_a_file_that_cannot_be_a_plan_exits_2_before_anything_starts(tmp_path):
    from tests.test_plan_validation import billion_laughs

    bomb, binary = tmp_path / "bomb.yaml", tmp_path / "binary.yaml"
    bomb.write_text(billion_laughs())
    binary.write_bytes(b"PAR1\x15\x04\x15\xff\xfe\x00")
    ray_tmp = tmp_path / "ray"  # where Ray would put its session (RAY_TMPDIR): it must stay empty
    ray_tmp.mkdir()
    env = os.environ | {"RAY_TMPDIR": str(ray_tmp)}
    for path, problem in (
        (bomb, "more than 100,000 YAML values with its aliases expanded (an alias bomb?): a plan has a few hundred"),
        (binary, "not UTF-8 text: byte 0xff at offset 7"),
    ):
        for args in (["plan", str(path)], ["run", "--plan", str(path), "--result-dir", str(tmp_path / "store")]):
            done = subprocess.run(
                [sys.executable, "bench.py", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 2, done.stderr
            assert done.stderr == f"bench.py: error: plan {path}: 1 problem(s)\n  - {problem}\n"
            assert done.stdout == ""
    assert not (tmp_path / "store").exists() and not list(ray_tmp.iterdir())


def test_dataset_offline_trains_on_the_offline_corpus_and_a_missing_hub_dataset_fails():
    assignments = [f"{k}={v}" for k, v in TINY.items() if k != "dataset"]
    done = bench("trial", *assignments, "--dataset-offline", "--json")
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)
    assert (row["dataset"], row["dataset_source"]) == ("offline", "offline:pydoc_data.topics")
    # a named hub dataset this machine cannot have (no hub in the tests, no copy): the trial fails and says why
    missing = bench("trial", *assignments, "dataset=bench-tests/no-such-dataset", "--json")
    assert missing.returncode == 1
    row = json.loads(missing.stdout)
    assert row["status"] == "failed" and row["dataset"] == "bench-tests/no-such-dataset"
    assert row["error"].startswith(
        "DatasetUnavailable: dataset 'bench-tests/no-such-dataset': the hub cannot be reached and "
    )
    conflict = bench("trial", "dataset=corpus.txt", "--dataset-offline")
    assert conflict.returncode == 2
    assert conflict.stderr == "bench.py: error: --dataset-offline contradicts dataset=corpus.txt\n"
    resume = bench("run", "--resume", "--dataset-offline")
    assert resume.returncode == 2
    assert resume.stderr.startswith("bench.py: error: --dataset-offline starts a new sweep; --resume continues")
