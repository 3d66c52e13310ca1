"""Watching a trial's worker: its timeout and memory cap (the resident memory of its whole process tree), from a
thread kept off the trial's CPUs, and the kill of its process group (SIGTERM, then SIGKILL after a grace)."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import time

import psutil

TERMINATE_GRACE_S = 5.0


def _tree_rss_mb(proc: psutil.Process) -> float:
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


@contextlib.contextmanager
def _off_the_trials_cpus(trial_cpus: list[int] | None):
    """Run the calling thread (the watcher; sched_setaffinity(0) is per thread on Linux) on CPUs the worker does not
    use, where there are any, so its wake-ups and the timers it arms stay off the measured cores."""
    mine = os.sched_getaffinity(0)
    spare = mine - set(trial_cpus) if trial_cpus is not None else set()  # None: the worker has every CPU we have
    if spare:
        os.sched_setaffinity(0, spare)
    try:
        yield
    finally:
        if spare:
            os.sched_setaffinity(0, mine)


def _watch(start, timeout_s, memory_cap_mb, poll_s, trial_cpus) -> dict:
    """Start the worker (`start()`: a subprocess.Popen, or a forked worker that behaves like one, each the leader of
    its own session) and wait for it; kill it (and its children) past the timeout or the memory cap."""
    started = time.perf_counter()
    with start() as popen:
        return _watched(popen, started, timeout_s, memory_cap_mb, poll_s, trial_cpus)


def _watched(popen, started: float, timeout_s, memory_cap_mb, poll_s, trial_cpus) -> dict:
    # Ray starts trial actors at nice 15 and the worker inherits it; lowered here, while the worker is still starting
    # its interpreter (one thread: setpriority is per thread, and the threads OpenMP starts later inherit it). Without
    # the privilege to lower it, the row's worker_nice shows what the worker ran at.
    with contextlib.suppress(PermissionError, ProcessLookupError):
        os.setpriority(os.PRIO_PROCESS, popen.pid, 0)
    proc = psutil.Process(popen.pid)
    # one poll(2) per check; Popen.wait(timeout) would wake every 50 ms (CPython's sleep loop)
    exited = os.pidfd_open(popen.pid)
    status = reason = None
    try:
        with _off_the_trials_cpus(trial_cpus):
            while True:
                if select.select([exited], [], [], poll_s)[0]:
                    popen.wait()
                    break
                elapsed = time.perf_counter() - started
                rss = _tree_rss_mb(proc)
                if elapsed > timeout_s:
                    status, reason = "timeout", f"timeout: still running after {timeout_s:g} s, killed"
                elif rss > memory_cap_mb:
                    status, reason = (
                        "failed",
                        f"memory cap: worker used {rss:.0f} MB > memory_cap_mb={memory_cap_mb}, killed",
                    )
                if reason:
                    _kill_group(popen)
                    break
    finally:
        os.close(exited)
        if popen.poll() is None:  # the caller was interrupted: never leave a worker behind
            _kill_group(popen)
    return {"exit_code": popen.returncode, "status": status, "reason": reason, "wall_s": time.perf_counter() - started}


def _kill_group(popen: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGTERM, TERMINATE_GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(popen.pid, sig)
        except ProcessLookupError:
            return
        try:
            popen.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue
