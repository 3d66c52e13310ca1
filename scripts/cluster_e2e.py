#!/usr/bin/env python3
"""The Ray cluster launcher end to end on one machine: cluster.yaml brings up two loopback "hosts".

sshd (Debian's openssh-server, plus rsync) listens on two loopback addresses only, with a key pair made
for this run; a copy of the shipped cluster.yaml names those two addresses; `ray up` syncs the repository
to ~/cpu-pretrain-bench, builds its venv and starts a head and a worker; a tiny plan runs on the head
(`ray exec ... bench.py run --address ... --nodes all`) and must leave rows from both nodes; then
`ray down`, and sshd stops. Teardown always runs, on failure and Ctrl-C too.

Run as root from the repository root: `make cluster-e2e` (or `venv/bin/python scripts/cluster_e2e.py`).
This is the launcher side; scripts/cluster_e2e_head.py is the part that `ray exec` runs on the head,
scripts/cluster_e2e_host.py makes this machine the two hosts (packages, sshd, token) and puts it back, and
scripts/cluster_e2e_steps.py holds what both sides share (phase timings, command echo, E2eError).

Why the copy differs from the shipped config (e2e_cluster_config): here both "hosts" are this machine,
which other people's Ray may share, so nothing may stop Ray machine-wide (`ray stop` kills every Ray
process of the machine; it is left out, and root's ~/.bashrc is not touched, so `ray down` finds no `ray`
to run). Each node keeps its files in its own --temp-dir under this run's directory, so other drivers'
`ray.init()` never finds this cluster, and every process the nodes start carries this run's mark in its
environment, so teardown stops exactly those.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import yaml

SCRIPTS = Path(__file__).resolve().parent
if str(SCRIPTS) not in sys.path:  # run as a script it is sys.path[0]; tests load this file by its path
    sys.path.append(str(SCRIPTS))

from cluster_e2e_host import (  # noqa: E402
    HomeFiles,
    check_machine,
    ensure_packages,
    ensure_token,
    start_sshd,
    stop_sshd,
)
from cluster_e2e_steps import E2eError, Phases, run_for  # noqa: E402

REPO = SCRIPTS.parent
RAY = REPO / "venv" / "bin" / "ray"
# Not 127.0.0.1: Ray rewrites 127.0.0.1 (and localhost) to the machine's primary address, for
# `ray start --node-ip-address` too (services.resolve_ip_for_localhost; seen: a head started with
# 127.0.0.1 registers as 192.0.2.2), so the node would not be the loopback host SSH reached.
HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"
GCS_PORT = 6379  # the shipped config's `ray start --head --port`
CLUSTER_SUFFIX = "-e2e"  # its own cluster name: its own launcher state file (/tmp/ray/cluster-<name>.state)
# Every process `ray start` spawns inherits it: how teardown finds this run's Ray processes and no one
# else's (the Ray client server, for one, names neither the temp dir nor a parent it could be found by).
RUN_MARK = "CPB_E2E_RUN"
# generous: the first `ray up` builds the venv (torch and all) in ~/cpu-pretrain-bench
RAY_UP_TIMEOUT_S, ON_HEAD_TIMEOUT_S, RAY_DOWN_TIMEOUT_S = 1800, 1200, 120
HEAD_SCRIPT = "scripts/cluster_e2e_head.py"  # relative to the head's copy of the repository


# ---- the cluster config ---------------------------------------------------------------------------
def e2e_cluster_config(shipped: dict, head_ip: str, worker_ip: str, key: Path, run_dir: Path, dashboard_port: int):
    """The shipped cluster.yaml with this machine's two loopback hosts filled in (see the module docstring)."""
    config = json.loads(json.dumps(shipped))  # a deep copy
    config["cluster_name"] += CLUSTER_SUFFIX
    config["provider"].update(head_ip=head_ip, worker_ips=[worker_ip])
    config["max_workers"] = 1
    config["auth"] = {"ssh_user": "root", "ssh_private_key": str(key)}
    config["setup_commands"] = [c for c in config["setup_commands"] if ".bashrc" not in c]
    for kind, extra in (("head", f" --dashboard-port={dashboard_port}"), ("worker", "")):
        commands = [c for c in config[f"{kind}_start_ray_commands"] if not c.rstrip().endswith("ray stop")]
        starts = [c for c in commands if "/venv/bin/ray start" in c]
        if len(starts) != 1:
            raise E2eError(f"cluster.yaml: expected one `ray start` in {kind}_start_ray_commands, found {len(starts)}")
        flags = f"/venv/bin/ray start --temp-dir={run_dir / ('ray-' + kind)}{extra}"
        config[f"{kind}_start_ray_commands"] = [
            f"export {RUN_MARK}={run_dir}; " + c.replace("/venv/bin/ray start", flags) for c in commands
        ]
    return config


# ---- teardown -------------------------------------------------------------------------------------
def stop_ray_of_run(run_dir: Path, grace_s: float = 10.0) -> int:
    """Stops the processes that this run's `ray start` commands spawned, and nothing else; returns how many."""
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(RUN_MARK) == str(run_dir):
                found[proc.pid] = proc
    # As `ray stop` does: raylets first (their workers follow), GCS last.
    rank = {pid: {"raylet": 0, "gcs_server": 2}.get(_name(proc), 1) for pid, proc in found.items()}
    for group in (0, 1, 2):
        procs = [proc for pid, proc in found.items() if rank[pid] == group]
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        for proc in psutil.wait_procs(procs, timeout=grace_s)[1]:
            with contextlib.suppress(psutil.Error):
                proc.kill()
    psutil.wait_procs(list(found.values()), timeout=5)
    return len(found)


def _name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except psutil.Error:
        return ""


# ---- the run: prepare, bring up, check, tear down -------------------------------------------------
class E2eRun:
    """One run's state; sshd and config_path stay None until the run gets that far, so teardown undoes only that."""

    def __init__(self, head_ip: str, worker_ip: str):
        self.addresses = [head_ip, worker_ip]
        self.run_dir = Path(tempfile.mkdtemp(prefix="cpb-e2e-"))
        self.phases = Phases("cluster-e2e")
        home = Path.home()
        self.home_files = HomeFiles(home / "ray_bootstrap_config.yaml", home / "ray_bootstrap_key.pem")
        self.ray_env = os.environ | {"RAY_AUTH_MODE": "token", "PYTHONUNBUFFERED": "1"}
        self.sshd: subprocess.Popen | None = None
        self.config_path: Path | None = None


def prepare(e2e: E2eRun) -> None:
    """This machine made ready to be both hosts: checked, packages installed, sshd listening, a Ray token."""
    with e2e.phases("check this machine"):
        check_machine(e2e.addresses, GCS_PORT)
    with e2e.phases("install openssh-server rsync"):
        ensure_packages()
    with e2e.phases("start sshd"):
        e2e.sshd = start_sshd(e2e.run_dir / "ssh", e2e.addresses)
    with e2e.phases("Ray token"):
        ensure_token(RAY)


def bring_up(e2e: E2eRun) -> None:
    """The e2e copy of cluster.yaml written, then `ray up`: the repository synced, its venv built, the head started."""
    with socket.socket() as free:  # a free port: a dashboard on 8265 may be someone else's
        free.bind(("127.0.0.1", 0))
        dashboard_port = free.getsockname()[1]
    shipped = yaml.safe_load((REPO / "cluster.yaml").read_text())
    key = e2e.run_dir / "ssh" / "id_ed25519"
    config = e2e_cluster_config(shipped, *e2e.addresses, key, e2e.run_dir, dashboard_port)
    e2e.config_path = e2e.run_dir / "cluster.yaml"
    e2e.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    with e2e.phases("ray up (sync, venv, head start)"):
        # cwd: file_mounts' `.` is the repository
        up = [RAY, "up", "-y", "--no-config-cache", e2e.config_path]
        if run_for(up, RAY_UP_TIMEOUT_S, cwd=REPO, env=e2e.ray_env).returncode != 0:
            raise E2eError(f"`ray up` failed (output above); head logs: {e2e.run_dir}/ray-head/session_latest/logs")


def check_on_head(e2e: E2eRun) -> None:
    """The head's part (HEAD_SCRIPT) through `ray exec`: the worker joins, a tiny sweep runs on both nodes."""
    on_head = ["venv/bin/python", HEAD_SCRIPT, "--address", f"{e2e.addresses[0]}:{GCS_PORT}"]
    on_head += ["--expect", ",".join(e2e.addresses), "--work-dir", str(e2e.run_dir / "head")]
    command = f"cd ~/cpu-pretrain-bench && RAY_AUTH_MODE=token {shlex.join(on_head)}"
    with e2e.phases("on the head: worker joins, sweep, rows"):
        exec_on_head = [RAY, "exec", e2e.config_path, command]
        if run_for(exec_on_head, ON_HEAD_TIMEOUT_S, cwd=REPO, env=e2e.ray_env).returncode != 0:
            raise E2eError(
                "the sweep on the head failed (output above); the worker's setup is logged in "
                f"{e2e.run_dir}/ray-head/session_latest/logs/monitor.*"
            )


def tear_down(e2e: E2eRun, passed: bool) -> None:
    """Undoes what the run got to; keeps the run directory (keys, logs) when it did not pass."""
    for signum in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not leave Ray or sshd running
        signal.signal(signum, signal.SIG_IGN)
    print("[cluster-e2e] tearing down (Ctrl-C is ignored until done)", flush=True)
    # First what `ray down` runs on the head, `ray stop`, but for these two nodes only. Before it:
    # here the head's autoscaler shares the launcher's state file and marks the nodes running
    # again as fast as `ray down` marks them terminated, so `ray down` would wait forever.
    with e2e.phases("stop Ray on both nodes"):
        print(f"  stopped {stop_ray_of_run(e2e.run_dir)} processes")
    if e2e.config_path is not None:
        with e2e.phases("ray down"):
            try:
                run_for([RAY, "down", "-y", e2e.config_path], RAY_DOWN_TIMEOUT_S, cwd=REPO, env=e2e.ray_env)
            except E2eError as exc:
                print(f"  {exc}", file=sys.stderr)
    if e2e.sshd is not None:
        with e2e.phases("stop sshd"):
            stop_sshd(e2e.sshd)
    e2e.home_files.restore()
    forget_launcher_state(e2e.run_dir)
    if passed:
        shutil.rmtree(e2e.run_dir, ignore_errors=True)
    else:
        print(f"[cluster-e2e] kept {e2e.run_dir} for its logs (sshd, Ray, monitor.out for the worker's setup)")


def forget_launcher_state(run_dir: Path) -> None:
    """What the launcher keeps in /tmp about this cluster: its state and lock files, `ray up`'s copy of the config."""
    name = yaml.safe_load((REPO / "cluster.yaml").read_text())["cluster_name"] + CLUSTER_SUFFIX
    for suffix in (".state", ".lock"):
        Path(tempfile.gettempdir(), "ray", f"cluster-{name}{suffix}").unlink(missing_ok=True)
    for cache in Path(tempfile.gettempdir()).glob("ray-config-*"):  # `ray up` caches this run's config
        with contextlib.suppress(OSError):
            if str(run_dir) in cache.read_text():
                cache.unlink()


def main_e2e(args) -> int:
    e2e = E2eRun(args.head_ip, args.worker_ip)
    print(f"[cluster-e2e] run directory (keys, sshd and Ray logs): {e2e.run_dir}")
    passed = interrupted = False
    try:
        prepare(e2e)
        bring_up(e2e)
        check_on_head(e2e)
        passed = True
    except E2eError as exc:
        print(f"[cluster-e2e] FAILED: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        interrupted = True
        print("[cluster-e2e] interrupted", file=sys.stderr)
    finally:
        tear_down(e2e, passed)
    print(f"\n[cluster-e2e] {'PASSED' if passed else 'FAILED'}; wall time per phase:\n{e2e.phases.summary()}")
    return 0 if passed else 130 if interrupted else 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="cluster_e2e.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--head-ip", default=HEAD_IP, help=f"loopback address of the head (default {HEAD_IP})")
    parser.add_argument("--worker-ip", default=WORKER_IP, help=f"loopback address of the worker (default {WORKER_IP})")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM unwinds like Ctrl-C, so the teardown runs
    return main_e2e(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
