"""One sweep measures on a machine at a time, and one writes to a store at a time.

Two local sweeps timing training on the same cores spoil each other's every number without a word (each Ray instance
believes it has every CPU), so a second `bench.py run` on a machine where one is measuring is refused with one line
naming the running sweep (its id, pid, start and store), unless it asks to queue behind it (`--queue`: it waits for
the first to end, then runs). The same holds for two runs on one store, wherever they run from: a resume of a sweep
another run is still writing would measure its missing trials twice. A run on a cluster (`--address`) measures on the
cluster's nodes, not here: it takes the store's lock only.

The locks are `flock` locks on files (the machine's: $BENCH_RUN_LOCK, else /tmp/bench-run.lock; the store's:
<result>/.run.lock), so the kernel releases them when the process ends however it ends (kill -9 included): a lock is
never left behind. Each holds its holder's pid, start and store as JSON for the refusal's line.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from sweep.manifest import SWEEPS_DIR
from trainables.columns import now_iso

LOCK_VARIABLE = "BENCH_RUN_LOCK"
DEFAULT_MACHINE_LOCK = Path("/tmp/bench-run.lock")
STORE_LOCK = ".run.lock"


class RunBusy(LookupError):
    """Another sweep holds the machine or the store: bench.py prints the line and exits 2."""


def machine_lock_path() -> Path:
    return Path(os.environ.get(LOCK_VARIABLE) or DEFAULT_MACHINE_LOCK)


@contextlib.contextmanager
def exclusive_run(result_dir: Path, *, local: bool, queue: bool = False) -> Iterator[None]:
    """Hold the machine's lock (a local run) and the store's for the whole sweep; refuse, or with `queue` wait, when
    another run holds either."""
    result_dir = Path(result_dir)
    result_dir.mkdir(parents=True, exist_ok=True)
    locks = ([(machine_lock_path(), "this machine")] if local else []) + [(result_dir / STORE_LOCK, "this store")]
    with contextlib.ExitStack() as held:
        for path, what in locks:
            held.enter_context(_lock(path, what, result_dir, queue))
        yield


@contextlib.contextmanager
def _lock(path: Path, what: str, result_dir: Path, queue: bool) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    with contextlib.suppress(OSError):
        os.fchmod(fd, 0o666)  # another user's sweep on this machine must be able to take the lock after ours
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            line = f"another sweep is measuring on {what}: {holder_text(fd)}"
            if not queue:
                raise RunBusy(f"{line}; bench.py run --queue waits for it to end") from None
            print(f"bench.py: {line}; waiting for it to end (--queue)", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        holder = {"pid": os.getpid(), "started_at": now_iso(), "result_dir": str(result_dir.resolve())}
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def holder_text(fd: int) -> str:
    """'sweep ID (pid N, started T, store DIR)' of the lock's holder, as far as its file says."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        holder = {}
    store = holder.get("result_dir")
    sweep = newest_sweep(Path(store)) if store else None
    return (
        f"sweep {sweep or '(starting)'} (pid {holder.get('pid', '?')}, started {holder.get('started_at', '?')}, "
        f"store {store or '?'})"
    )


def newest_sweep(result_dir: Path) -> str | None:
    manifests = sorted((result_dir / SWEEPS_DIR).glob("*.json"), key=lambda p: p.stat().st_mtime)
    return manifests[-1].stem if manifests else None
