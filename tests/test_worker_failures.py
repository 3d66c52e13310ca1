"""A worker that crashes, hangs, fails or grows past its memory cap becomes a result, never an exception."""

import os
import time

from trainables.config import build_config
from trainables.launcher import run_trial


def test_crashing_worker_is_a_failed_result(tiny, data_dir):
    row = run_trial(
        build_config(tiny),
        data_dir=data_dir,
        worker_argv=("-c", "import os, sys; print('dying', file=sys.stderr); os.abort()"),
    )
    assert row["status"] == "failed"
    assert row["error"] == "worker killed by signal SIGABRT"
    assert row["exit_code"] == -6
    assert "dying" in row["stderr_tail"]


def test_worker_exiting_without_a_result(tiny, data_dir):
    row = run_trial(build_config(tiny), data_dir=data_dir, worker_argv=("-c", "raise SystemExit(3)"))
    assert (row["status"], row["error"], row["exit_code"]) == (
        "failed",
        "worker exited with code 3 without a result",
        3,
    )


def test_worker_exiting_cleanly_without_a_result(tiny, data_dir):
    row = run_trial(build_config(tiny), data_dir=data_dir, worker_argv=("-c", "pass"))
    assert (row["status"], row["error"]) == ("failed", "worker exited with code 0 without a result")


def test_hanging_worker_is_a_timeout_result(tiny, data_dir):
    started = time.perf_counter()
    hang = ("-c", "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)")
    row = run_trial(build_config(tiny | {"timeout_s": 1}), data_dir=data_dir, worker_argv=hang, poll_s=0.1)
    assert row["status"] == "timeout"
    assert row["error"] == "timeout: still running after 1 s, killed"
    assert time.perf_counter() - started < 15


def test_exception_inside_the_real_worker_is_reported(tiny, data_dir, tmp_path):
    bad = tmp_path / "numbers.jsonl"
    bad.write_text('{"value": 1}\n{"value": 2}\n')
    row = run_trial(build_config(tiny | {"dataset": str(bad)}), data_dir=data_dir)
    assert row["status"] == "failed"
    assert row["error"].startswith("ValueError: dataset has no text column")
    assert "Traceback" in row["traceback"]
    assert row["exit_code"] == 1


def test_a_thread_setting_that_did_not_take_fails_the_trial(tiny, data_dir):
    # the real worker, in a process whose torch inter-op pool was already sized to 3: interop_threads=1 cannot take
    preset = (
        "-c",
        "import runpy, torch; torch.set_num_interop_threads(3); runpy.run_module('trainables.worker', run_name='__main__')",
    )
    row = run_trial(build_config(tiny | {"interop_threads": 1}), data_dir=data_dir, worker_argv=preset)
    assert row["status"] == "failed"
    assert row["error"].startswith("RuntimeError: interop_threads=1 did not take: torch runs 3 inter-op threads")
    assert "torch_interop_threads" not in row  # no row measured with the wrong setting


def test_memory_cap_kills_the_worker(tiny, data_dir):
    row = run_trial(build_config(tiny | {"memory_cap_mb": 64}), data_dir=data_dir, poll_s=0.05)
    assert row["status"] == "failed"
    assert row["error"].startswith("memory cap: worker used") and "memory_cap_mb=64" in row["error"]


def test_no_process_is_left_behind(tiny, data_dir):
    before = set(os.listdir("/proc"))
    run_trial(
        build_config(tiny | {"timeout_s": 1}),
        data_dir=data_dir,
        worker_argv=("-c", "import time; time.sleep(30)"),
        poll_s=0.1,
    )
    leftover = [p for p in set(os.listdir("/proc")) - before if p.isdigit() and _cmdline(p).endswith("time.sleep(30)")]
    assert leftover == []


def _cmdline(pid: str) -> str:
    try:
        return open(f"/proc/{pid}/cmdline").read().replace("\0", " ").strip()
    except OSError:
        return ""
