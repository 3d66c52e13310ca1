"""Helpers for tests that run real sweeps through `bench.py run` (a real local Ray instance)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import yaml

from tests.conftest import REPO_ROOT, TINY

TINY_BASELINE = TINY | {"batch_size": 2, "window": 16}


def write_plan(path: Path, studies: list[dict], name: str = "t", **baseline) -> Path:
    path.write_text(yaml.safe_dump({"name": name, "baseline": TINY_BASELINE | baseline, "studies": studies}))
    return path


def start_bench(*args: str, env: dict | None = None) -> subprocess.Popen:
    """bench.py in its own session, so a test can kill it and everything Ray started under it."""
    return subprocess.Popen(
        [sys.executable, "bench.py", *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env=(os.environ | (env or {})),
        # a suite started in the background (`make test &`) ignores SIGINT, and children inherit that: bench.py gets
        # Ctrl-C's default back, as it has in a terminal
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def run_bench(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = start_bench(*args, env=env)
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        kill_session(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL the process and every process of its session (Ray's raylet, GCS and workers included)."""
    sid = proc.pid
    victims = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid:
                victims.append(p)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    for p in victims:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    psutil.wait_procs(victims, timeout=10)
    if proc.poll() is None:
        proc.wait(timeout=10)


def bench_trial(*assignments: str) -> subprocess.CompletedProcess:
    """`bench.py trial ... --json` in the real worker, offline (no hub): its exit code, JSON row and stderr."""
    return subprocess.run(
        [sys.executable, "bench.py", "trial", *assignments, "--json"],
        cwd=REPO_ROOT,
        env=os.environ | {"HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
