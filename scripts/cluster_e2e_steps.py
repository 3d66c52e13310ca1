"""What both sides of `make cluster-e2e` share: each phase printed with its wall time, commands echoed
before they run, and E2eError, the failure a message explains.

scripts/cluster_e2e.py (the launcher) and scripts/cluster_e2e_head.py (run on the head through `ray exec`)
import it, so both sides' output reads alike.
"""

from __future__ import annotations

import contextlib
import shlex
import subprocess
import time
from pathlib import Path


class E2eError(Exception):
    """The end-to-end run failed in a way the message explains."""


class Phases:
    """Prints each phase with its wall time, and keeps them for the summary."""

    def __init__(self, prefix: str):
        self.prefix, self.times = prefix, []

    @contextlib.contextmanager
    def __call__(self, name: str):
        print(f"[{self.prefix}] {name} ...", flush=True)
        started, outcome = time.perf_counter(), "failed"
        try:
            yield
            outcome = ""
        finally:
            wall = time.perf_counter() - started
            self.times.append((name, wall, outcome))
            print(f"[{self.prefix}] {name}: {wall:.1f} s {outcome}".rstrip(), flush=True)

    def summary(self) -> str:
        lines = [f"  {name:<40} {wall:7.1f} s {outcome}".rstrip() for name, wall, outcome in self.times]
        return "\n".join([*lines, f"  {'total':<40} {sum(w for _, w, _ in self.times):7.1f} s"])


def run(cmd: list, **kwargs) -> subprocess.CompletedProcess:
    print("  $ " + shlex.join(str(c) for c in cmd), flush=True)
    return subprocess.run([str(c) for c in cmd], **kwargs)


def run_for(cmd: list, timeout_s: float, **kwargs) -> subprocess.CompletedProcess:
    try:
        return run(cmd, timeout=timeout_s, **kwargs)
    except subprocess.TimeoutExpired:
        raise E2eError(f"`{Path(str(cmd[0])).name} {cmd[1]}` did not finish within {timeout_s:.0f} s") from None
