"""The launcher's side of the fork server: a worker forked from a process that imported the framework already.

A fresh `python -m trainables.worker` pays ~1.75 s importing torch before its first step. A fork server
(trainables/preload_server.py, one per node and environment, in a session of its own) imports the trainer and
everything the worker imports once, runs no parallel region (no thread pool ever starts in it), and forks one fresh
process per trial, which calls setsid, so the launcher watches and kills it exactly as it does a spawned worker
(pidfd, tree RSS, killpg). The server reports each child's pid at once and its exit status when it ends; it keeps the
exited child unreaped until the launcher hangs up, so the pid the launcher watches can never be another process's.

A server is keyed by everything the native libraries read as they load: the worker's whole environment (libgomp reads
OMP_* / GOMP_* then, LD_PRELOAD chooses the allocator, the ISA cap and BENCH_* are read at import), the Python
executable, the framework, and the CPU mask the libraries load under (libgomp sizes its places from it). A trial whose
key no server holds gets a new server, and beyond SERVERS the one used longest ago is told to go (each holds a few
hundred MB).

A server serves one round of a sweep (`generation`: the trial's repeat): a forked child inherits its server's whole
address-space layout, and an eager trial allocates the same way each time, so every repeat of a point forked from one
server ran on one memory layout. Whole trials shift level by layout (Mytkowicz et al. 2009, "Producing wrong data
without doing anything obviously wrong!"); a spawned worker draws a fresh layout (ASLR) each time, and repeats from
one server did not: two 15-minute quick runs with twelve long-lived servers disagreed by 14-19% on five ratios whose
point and reference had different servers, 2-3 times the within-run intervals (benchmarks/README.md). A server per
round makes a point's repeats independent draws again, as spawned ones are; points of one environment still share
their round's server, so its layout cancels in their ratio. Starting a newer round's server tells the older ones of
the same key to go. Servers live in a private folder (mode 0700): $BENCH_PRELOAD_DIR, else $XDG_RUNTIME_DIR/bench-preload, else
/tmp/bench-preload-<uid>. A server exits after IDLE_S without a request, or once its socket file is gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import select
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ENABLE_VARIABLE = "BENCH_PRELOAD"  # 0: every worker is spawned, as before the fork server; 1: eager ones fork
DEFAULT = "1"
DIR_VARIABLE = "BENCH_PRELOAD_DIR"
IDLE_S = 300.0
# each idle server holds ~300 MB (much of it the shared libraries' pages) and wakes every few seconds: twelve hold the
# quick plan's environments (allocators, ISA caps, core counts, OpenMP settings, frameworks); six restarted 85 times
SERVERS, SERVERS_VARIABLE = 12, "BENCH_PRELOAD_SERVERS"
START_TIMEOUT_S = 120.0  # the server's imports: ~2.7 s for torch here, much more on a loaded node
REPLY_TIMEOUT_S = 30.0
# per call, read by no library: left out of the key, and set in the child as the request has it
NOT_IN_KEY = ("PYTEST_CURRENT_TEST",)


class PreloadUnavailable(Exception):
    """No fork server can take this trial: the launcher spawns its worker as it would without one."""


def fork_refusal(cfg, custom_worker: bool) -> str | None:
    """Why this trial's worker is spawned rather than forked, or None. Only eager trials fork: a compiled trial's
    compiler (and its cache) would run in a process whose start it shares with other trials."""
    if os.environ.get(ENABLE_VARIABLE, DEFAULT) == "0":
        return f"{ENABLE_VARIABLE}=0"
    if custom_worker:
        return "a custom worker_argv"
    if cfg.numa is not None:
        return f"numa={cfg.numa}: numactl starts the worker"
    if cfg.compile != "eager" or cfg.jit_cache is not None:
        return f"compile={cfg.compile}: only eager trials fork"
    return None


@contextlib.contextmanager
def fork_server(cfg, custom_worker: bool, env: dict[str, str], cpus: list[int] | None, generation: int = 0):
    """A connection to the fork server of this worker's environment (started if need be), or None: the worker is
    spawned (a trial that cannot fork, or no server to be had)."""
    if fork_refusal(cfg, custom_worker) is not None:
        yield None
        return
    # the mask a spawned worker's libraries load under: the launcher's, narrowed to the trial's CPUs by worker.main
    load_cpus = cpus if cpus is not None else sorted(os.sched_getaffinity(0))
    try:
        server = connect(env, cfg.framework, load_cpus, generation=generation)
    except PreloadUnavailable as exc:
        print(f"launcher: spawning the worker: {exc}", file=sys.stderr)
        yield None
        return
    with server:
        yield server


def runtime_dir() -> Path:
    """The private folder of this user's servers, made on first use; refused if anyone else could enter it."""
    base = os.environ.get(DIR_VARIABLE)
    if base:
        folder = Path(base)
    elif os.environ.get("XDG_RUNTIME_DIR"):
        folder = Path(os.environ["XDG_RUNTIME_DIR"]) / "bench-preload"
    else:
        folder = Path(f"/tmp/bench-preload-{os.getuid()}")
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700, parents=True)
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PreloadUnavailable(f"{folder} is not a folder of uid {os.getuid()} with mode 0700")
    return folder


def server_key(env: dict[str, str], python: str, framework: str, load_cpus: list[int]) -> str:
    keyed = {k: v for k, v in env.items() if k not in NOT_IN_KEY}
    text = json.dumps([sorted(keyed.items()), python, framework, sorted(load_cpus)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]  # short: a socket path holds at most 107 bytes


class ForkServer:
    """One connection to a server; after fork(), the forked worker, watched like a subprocess.Popen (pid, poll,
    wait, TimeoutExpired). Hanging up (close) lets the server reap the child, or kill it if it still runs."""

    def __init__(self, sock: socket.socket, server_pid: int, start_s: float) -> None:
        self.sock, self.server_pid, self.start_s = sock, server_pid, start_s
        self.pid: int | None = None
        self.returncode: int | None = None
        self._buffer = b""

    def fork(self, payload: Path, result: Path, stderr: Path, env: dict[str, str]) -> ForkServer:
        request = {"payload": str(payload), "result": str(result), "stderr": str(stderr), "env": env}
        try:
            self.sock.sendall(json.dumps(request).encode() + b"\n")
            reply = self._message(REPLY_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PreloadUnavailable(f"the fork server did not fork: {exc}") from None
        if not reply or "pid" not in reply:
            raise PreloadUnavailable(f"the fork server did not fork: {reply}")
        self.pid = reply["pid"]
        return self

    def poll(self) -> int | None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.wait(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            message = self._message(timeout)
            # no message: the server died, and the kernel killed its child with it (PR_SET_PDEATHSIG)
            self.returncode = message["exit_code"] if message else -signal.SIGKILL
        return self.returncode

    def _message(self, timeout: float | None) -> dict | None:
        """The server's next line as JSON; None when it hung up; TimeoutExpired when none came in `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if not select.select([self.sock], [], [], left)[0]:
                raise subprocess.TimeoutExpired("fork server", timeout)
            data = self.sock.recv(65536)
            if not data:
                return None
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> ForkServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def connect(
    env: dict[str, str], framework: str, load_cpus: list[int], python: str = sys.executable, generation: int = 0
) -> ForkServer:
    """A connection to the server of this key and generation, started (older generations of the key, and beyond
    max_servers() the server used longest ago, told to go) if none runs; raises PreloadUnavailable when none can be
    had."""
    folder = runtime_dir()
    base = server_key(env, python, framework, load_cpus)
    key = f"{base}.{generation}"
    path = folder / f"{key}.sock"
    started = time.perf_counter()
    with _locked(folder):
        for _attempt in range(2):
            sock = _try_connect(path)
            start_s = 0.0
            if sock is None:
                _retire_generations(folder, base)
                stop_servers(folder, keep=max_servers() - 1)
                _start_server(folder, key, env, python, framework, load_cpus)
                start_s = time.perf_counter() - started
                sock = _try_connect(path)
            if sock is None:
                raise PreloadUnavailable(f"the fork server started but {path} takes no connection")
            server = ForkServer(sock, 0, start_s)
            try:
                hello = server._message(REPLY_TIMEOUT_S)
            except (OSError, subprocess.TimeoutExpired):
                hello = None
            if hello and "server_pid" in hello:
                server.server_pid = hello["server_pid"]
                with contextlib.suppress(FileNotFoundError):
                    os.utime(path)  # used now: the last server to go when another must start
                return server
            sock.close()  # it was going (idle, or its socket removed) as we connected: once more
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    raise PreloadUnavailable(f"the fork server at {path} did not answer")


def stop_servers(folder: Path | None = None, keep: int = 0) -> list[int]:
    """Tell every server in `folder` but the `keep` used last to go (its socket file removed: it exits once its
    children have); their pids."""
    pids = []
    sockets = sorted((folder or runtime_dir()).glob("*.sock"), key=_last_used, reverse=True)
    for path in sockets[keep:]:
        sock = _try_connect(path)
        if sock is not None:
            with sock, contextlib.suppress(OSError, subprocess.TimeoutExpired, ValueError):
                hello = ForkServer(sock, 0, 0.0)._message(2.0) or {}
                pids.append(hello.get("server_pid"))
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return [pid for pid in pids if pid]


def _retire_generations(folder: Path, base: str) -> None:
    """Tell the servers of this key's other generations (rounds) to go: no later trial asks for them."""
    for path in folder.glob(f"{base}.*.sock"):  # its socket file gone, a server exits once its children have
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def max_servers() -> int:
    """How many servers a node keeps (BENCH_PRELOAD_SERVERS, default SERVERS): a sweep alternates between a few
    environments (allocators, thread counts, OpenMP settings), and a server each spares a restart on every switch."""
    try:
        return max(1, int(os.environ.get(SERVERS_VARIABLE, SERVERS)))
    except ValueError:
        return SERVERS


def _last_used(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _try_connect(path: Path) -> socket.socket | None:
    """A connection to the socket at `path`, or None; a socket file nobody listens on (a dead server's) is
    removed."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
        return sock
    except FileNotFoundError:
        sock.close()
        return None
    except (ConnectionRefusedError, ConnectionResetError):
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return None


@contextlib.contextmanager
def _locked(folder: Path):
    """One launcher at a time finds or starts a server; a server about to go takes the same lock (never waits)."""
    with open(folder / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _start_server(folder: Path, key: str, env: dict, python: str, framework: str, load_cpus: list[int]) -> None:
    """Start the server under the worker's own environment and wait until it listens. It forks itself away at once
    (nobody's child, its own session): stdout is only its 'ready' line."""
    log = folder / f"{key}.log"
    argv = [python, "-m", "trainables.preload_server", str(folder), key, framework, ",".join(map(str, load_cpus))]
    argv.append(str(IDLE_S))
    with open(log, "wb") as stderr:
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,
        )
    ready = b""
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready.endswith(b"\n") and time.monotonic() < deadline:
            if select.select([proc.stdout], [], [], max(deadline - time.monotonic(), 0.0))[0]:
                data = os.read(proc.stdout.fileno(), 256)
                if not data:
                    break
                ready += data
    finally:
        proc.stdout.close()
        proc.wait()  # the first process returns as soon as it has forked the server
    if ready.strip() != b"ready":
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # a server still importing past the deadline
        tail = log.read_text(errors="replace")[-600:] if log.exists() else ""
        raise PreloadUnavailable(f"the fork server did not start: {tail.strip() or 'no output'}")
