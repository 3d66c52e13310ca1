"""This machine made ready to be both hosts of the e2e cluster, and put back: the Debian packages, an sshd
on two loopback addresses that accepts only this run's key, the Ray token, and the files `ray up` writes
into root's home. scripts/cluster_e2e.py runs these steps; the module docstring there says why.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shlex
import shutil
import socket
import subprocess
import time
from pathlib import Path

import psutil
from cluster_e2e_steps import E2eError, run

SSHD = "/usr/sbin/sshd"  # sshd re-executes itself and insists on an absolute path
PACKAGES = ("openssh-server", "rsync")


def check_machine(addresses: list[str], gcs_port: int) -> None:
    """Root, loopback addresses, SSH and GCS ports free, and no other Ray that `ray down` would stop."""
    if os.geteuid() != 0:
        raise E2eError(
            "run as root: it installs Debian packages and starts sshd on port 22 "
            "(Ray's launcher has no SSH port setting)"
        )
    for ip in addresses:
        if not ipaddress.ip_address(ip).is_loopback or ip == "127.0.0.1":
            raise E2eError(
                f"{ip}: the hosts must be loopback addresses other than 127.0.0.1 (127.0.0.2 to 127.255.255.254)"
            )
    for ip, port in [(ip, 22) for ip in addresses] + [("0.0.0.0", gcs_port)]:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT is no owner
            try:
                probe.bind((ip, port))
            except OSError as exc:
                raise E2eError(f"{ip}:{port} is taken ({exc.strerror}); the e2e needs it free") from None
    others = [p for p in psutil.process_iter(["name", "pid"]) if p.info["name"] in ("raylet", "gcs_server")]
    if others and ray_on_login_path():
        pids = ", ".join(f"{p.info['name']} {p.info['pid']}" for p in others)
        raise E2eError(
            f"another Ray runs on this machine ({pids}) and `ray` is on root's login PATH, so `ray down` "
            "(which runs a bare `ray stop` on the head, here this machine) would stop it too; "
            "run again when it is done"
        )


def ray_on_login_path() -> bool:
    """Whether the login shell `ray down` runs `ray stop` in (bash --login -i, ~/.bashrc) finds a `ray`."""
    shell = subprocess.run(
        ["bash", "--login", "-i", "-c", "command -v ray"], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    return bool(shell.stdout.strip())


def ensure_packages() -> None:
    missing = [p for p in PACKAGES if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]
    if not missing:
        print(f"  installed already: {' '.join(PACKAGES)}")
        return
    # Debian starts a freshly installed sshd on every address; policy-rc.d exit 101 forbids that.
    policy = Path("/usr/sbin/policy-rc.d")
    ours = not policy.exists()
    if ours:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
        for cmd in (["apt-get", "update", "-qq"], install):
            if run(cmd, env=env).returncode != 0:
                raise E2eError(f"`{shlex.join(cmd)}` failed; install {' '.join(missing)} by hand and run again")
    finally:
        if ours:
            policy.unlink()


def start_sshd(ssh_dir: Path, addresses: list[str]) -> subprocess.Popen:
    """sshd on the given loopback addresses only, accepting only this run's key, as a child of this process."""
    ssh_dir.mkdir(mode=0o700)
    keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cpu-pretrain-bench-e2e", "-f"]
    for name in ("host_ed25519", "id_ed25519"):
        run([*keygen, ssh_dir / name], check=True)
    shutil.copy(ssh_dir / "id_ed25519.pub", ssh_dir / "authorized_keys")
    config = ssh_dir / "sshd_config"
    settings = [f"ListenAddress {ip}:22" for ip in addresses] + [
        f"HostKey {ssh_dir / 'host_ed25519'}",
        f"PidFile {ssh_dir / 'sshd.pid'}",
        f"AuthorizedKeysFile {ssh_dir / 'authorized_keys'}",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "X11Forwarding no",
        "AllowAgentForwarding no",
        "AllowTcpForwarding no",
        "PermitTunnel no",
        # The key files sit in a 0700 directory made by mkdtemp; StrictModes would refuse them only
        # because an ancestor (/tmp) is world-writable.
        "StrictModes no",
    ]
    config.write_text("\n".join(settings) + "\n")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    checked = subprocess.run([SSHD, "-t", "-f", config], capture_output=True, text=True)
    if checked.returncode != 0:
        raise E2eError(f"sshd rejects {config}: {checked.stderr.strip()}")
    log = ssh_dir / "sshd.log"
    sshd = subprocess.Popen([SSHD, "-D", "-f", config, "-E", log])
    deadline = time.monotonic() + 10
    for ip in addresses:
        while True:
            if sshd.poll() is not None:
                raise E2eError(f"sshd exited with status {sshd.returncode}; its log: {log}")
            with contextlib.suppress(OSError), socket.create_connection((ip, 22), timeout=1):
                break
            if time.monotonic() > deadline:
                raise E2eError(f"sshd does not answer on {ip}:22 after 10 s; its log: {log}")
            time.sleep(0.1)
    print(f"  sshd pid {sshd.pid} on {', '.join(a + ':22' for a in addresses)}")
    return sshd


def ensure_token(ray: Path) -> None:
    """The token the nodes authenticate with: root's own if it has one (kept as it is), else a new one."""
    token = Path.home() / ".ray" / "auth_token"
    if token.exists():
        print(f"  using the existing {token}")
        return
    # --generate prints the token: keep it out of the log
    if run([ray, "get-auth-token", "--generate"], capture_output=True).returncode != 0 or not token.exists():
        raise E2eError(f"`ray get-auth-token --generate` did not create {token}")
    print(f"  generated {token} (kept: every `ray` command on this machine uses it from now on)")


def stop_sshd(sshd: subprocess.Popen) -> None:
    try:
        sessions = psutil.Process(sshd.pid).children(recursive=True)  # open sessions outlive the listener
    except psutil.Error:
        sessions = []
    sshd.terminate()
    try:
        sshd.wait(timeout=5)
    except subprocess.TimeoutExpired:
        sshd.kill()
        sshd.wait()
    for proc in sessions:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    for proc in psutil.wait_procs(sessions, timeout=5)[1]:
        with contextlib.suppress(psutil.Error):
            proc.kill()


class HomeFiles:
    """Files `ray up` writes into the head's home (here root's): put back as they were."""

    def __init__(self, *paths: Path):
        self.saved = {p: (p.read_bytes() if p.exists() else None) for p in paths}

    def restore(self) -> None:
        for path, content in self.saved.items():
            if content is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(content)
