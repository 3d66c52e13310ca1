"""The fork server (trainables/preload.py starts it): import what a worker imports once, then fork one worker a trial.

    python -m trainables.preload_server FOLDER KEY FRAMEWORK LOAD_CPUS IDLE_S

It runs under the exact environment the launcher built for the trial's worker and sets the CPU mask the worker would
load its libraries under before importing anything of the project, so every native library initialises as in a
fresh worker. It never runs a parallel region: importing starts no OpenMP team (numpy's OpenBLAS starts its threads
as it loads, and its fork handler stops them: after one throw-away fork the server must be down to one thread, or it
refuses to serve). It is single-threaded, so each fork copies a process with no other thread and no lock held.

Protocol, one JSON line each way on a Unix stream socket: the server greets {"server_pid"}; the launcher asks
{"payload", "result", "stderr", "env"}; the server forks and answers {"pid"} at once and {"exit_code"} (Popen's
convention: -N for signal N) when the child ends. The child stays unreaped until the launcher hangs up; a launcher
that hangs up while its child runs (it was killed) gets its child's process group killed.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import os
import select
import selectors
import signal
import socket
import sys
import time
import traceback
from pathlib import Path

CHECK_S = 5.0  # how often an idle server looks at its socket file and the clock: a few µs, every few seconds
PREAMBLE_BYTES = 65536
# what trainables/worker.py imports, so that a forked worker imports nothing (its trainer comes from the registry)
WORKER_IMPORTS = (
    "hwctl.files",
    "hwctl.isa",
    "hwctl.numa",
    "hwctl.telemetry",
    "threadpoolctl",
    "trainables.config",
    "trainables.dataset",
    "trainables.flops",
    "trainables.timing",
    "trainables.worker",
)


def main(argv: list[str]) -> int:
    folder, key, framework, load_cpus, idle_s = Path(argv[0]), argv[1], argv[2], argv[3], float(argv[4])
    if os.fork():  # the launcher's Popen returns at once: this server is nobody's child
        os._exit(0)
    cpus = [int(c) for c in load_cpus.split(",")]
    os.sched_setaffinity(0, cpus)  # before any library loads: libgomp reads the mask as it initialises
    preload(framework)
    pid = os.fork()  # the throw-away fork: OpenBLAS's fork handler stops the threads it started as it loaded
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    loaded_mask = sorted(os.sched_getaffinity(0))  # libgomp bound this thread to its first place as it loaded
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:
        print(f"fork server: {threads} threads after importing {framework}: forking would copy them", file=sys.stderr)
        return 1
    # what the libraries printed as they loaded (libgomp's OMP_DISPLAY_ENV block, warnings): each child's stderr
    # starts with it, as a fresh worker's would
    sys.stderr.flush()
    log = folder / f"{key}.log"
    preamble = log.read_bytes()[:PREAMBLE_BYTES] if log.exists() else b""
    path = folder / f"{key}.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(f"{path}.{os.getpid()}")
    listener.listen(16)
    os.rename(f"{path}.{os.getpid()}", path)  # appears only now that it listens
    inode = path.stat().st_ino
    print("ready", flush=True)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    Server(listener, path, inode, folder / "lock", idle_s, (preamble, cpus, loaded_mask)).serve()
    return 0


def preload(framework: str) -> None:
    from trainables.trainer import load_trainer

    for module in WORKER_IMPORTS:
        importlib.import_module(module)
    load_trainer(framework)  # imports the framework: what a fresh worker spends most of its start-up on


class Trial:
    """One launcher's connection, and the child it asked for."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buffer = sock, b""
        self.pid: int | None = None
        self.pidfd: int | None = None
        self.exited = False


class Server:
    def __init__(self, listener, path: Path, inode: int, lock: Path, idle_s: float, child_setup: tuple) -> None:
        self.listener, self.path, self.inode, self.lock, self.idle_s = listener, path, inode, lock, idle_s
        self.child_setup = child_setup
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ, "accept")
        self.trials: dict[socket.socket, Trial] = {}
        self.last_request = time.monotonic()

    def serve(self) -> None:
        while True:
            for event, _ in self.selector.select(CHECK_S):
                if event.data == "accept":
                    self.accept()
                elif isinstance(event.data, Trial) and event.fileobj is event.data.sock:
                    self.read(event.data)
                else:
                    self.child_exited(event.data)
            if not self.trials and self.should_go():
                return

    def accept(self) -> None:
        sock, _ = self.listener.accept()
        trial = Trial(sock)
        self.trials[sock] = trial
        self.selector.register(sock, selectors.EVENT_READ, trial)
        self.send(trial, {"server_pid": os.getpid()})

    def read(self, trial: Trial) -> None:
        data = trial.sock.recv(1 << 20)
        if not data:
            self.hang_up(trial)
            return
        trial.buffer += data
        if b"\n" in trial.buffer and trial.pid is None:
            request = json.loads(trial.buffer.split(b"\n", 1)[0])
            self.last_request = time.monotonic()
            trial.pid = self.fork(request)
            trial.pidfd = os.pidfd_open(trial.pid)
            self.selector.register(trial.pidfd, selectors.EVENT_READ, trial)
            self.send(trial, {"pid": trial.pid})

    def fork(self, request: dict) -> int:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            run_child(request, [self.listener, *self.trials], *self.child_setup)  # never returns
        return pid

    def child_exited(self, trial: Trial) -> None:
        """Its exit status, read without reaping it: the launcher may still watch its pid."""
        info = os.waitid(os.P_PID, trial.pid, os.WEXITED | os.WNOWAIT)
        code = info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
        self.selector.unregister(trial.pidfd)
        os.close(trial.pidfd)
        trial.pidfd, trial.exited = None, True
        self.send(trial, {"exit_code": code})

    def hang_up(self, trial: Trial) -> None:
        if trial.pid is not None:
            if not trial.exited:  # the launcher is gone while its worker runs: never leave one behind
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(trial.pid, signal.SIGKILL)
            if trial.pidfd is not None:
                self.selector.unregister(trial.pidfd)
                os.close(trial.pidfd)
            os.waitpid(trial.pid, 0)
            self.last_request = time.monotonic()
        self.selector.unregister(trial.sock)
        del self.trials[trial.sock]
        trial.sock.close()

    def send(self, trial: Trial, message: dict) -> None:
        with contextlib.suppress(OSError):  # a launcher that is gone learns nothing: hang_up follows
            trial.sock.sendall(json.dumps(message).encode() + b"\n")

    def should_go(self) -> bool:
        """Its socket file removed or replaced (told to go), or idle too long. Going takes the launchers' lock
        without waiting for it, so no launcher is between connecting and its greeting."""
        try:
            replaced = self.path.stat().st_ino != self.inode
        except FileNotFoundError:
            replaced = True
        if not replaced and time.monotonic() - self.last_request < self.idle_s:
            return False
        with open(self.lock, "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            if select.select([self.listener], [], [], 0)[0]:  # a launcher connected before we took the lock
                return False
            if not replaced:
                self.path.unlink()
            with contextlib.suppress(FileNotFoundError):
                self.path.with_suffix(".log").unlink()
            self.listener.close()
            return True


def run_child(
    request: dict, inherited: list[socket.socket], preamble: bytes, load_cpus: list[int], loaded_mask: list[int]
) -> None:
    """The forked worker: its own session, stderr and stdout in the trial's file, the request's environment and the
    mask the libraries loaded under; then the worker, then _exit (never back into the server's loop)."""
    import trainables.worker as worker

    worker._IMPORT_STARTED = time.time()  # the worker's clock starts at the fork: the imports were the server's
    worker._LOADED_MAIN_THREAD_MASK = loaded_mask
    code = 1
    try:
        os.setsid()
        for sock in inherited:
            sock.close()
        out = os.open(request["stderr"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        os.write(2, preamble)
        for name in set(os.environ) - set(request["env"]):
            del os.environ[name]
        os.environ.update(request["env"])
        os.sched_setaffinity(0, load_cpus)  # worker.main narrows it to the trial's CPUs, as in a fresh worker
        numpy = sys.modules.get("numpy")
        if numpy is not None:  # a fresh process seeds numpy's global generator from the OS: so does each child
            numpy.random.seed()
        code = worker.main([request["payload"], request["result"]])
    except BaseException:
        with contextlib.suppress(Exception):
            traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
