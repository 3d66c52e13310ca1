"""`bench.py run` without its dashboard (the default; `--dashboard` turns it on) and the settle wait on every node, with a real local Ray (one node).

Ray 2.60 with include_dashboard=False still starts its dashboard head process, but with `--disable-frontend` and
only its usage-stats module: no page and none of the module processes behind one.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import time

import psutil
import pytest
import ray

from hwctl.housekeeping import split_node_cpus
from sweep.nodes import alive_nodes
from sweep.runner import settle
from sweep.tuning import dashboard_off_line, ray_session
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def ray_without_dashboard():
    """A Ray started through ray_session(dashboard=False), and what ray_session printed."""
    printed = io.StringIO()
    with contextlib.ExitStack() as session:
        with contextlib.redirect_stdout(printed):
            session.enter_context(ray_session(dashboard=False))
        yield printed.getvalue()
    assert not ray.is_initialized()  # ray_session shut down the Ray it started


def ray_processes() -> list[psutil.Process]:
    return psutil.Process().children(recursive=True)  # a Ray started here: its processes are this one's children


def test_no_dashboard_serves_no_page_and_says_it_is_off(ray_without_dashboard):
    # with a housekeeping CPU (4 CPUs or more), a line saying where Ray's processes were pinned comes first
    housekeeping = split_node_cpus()[0]
    assert ray_without_dashboard.splitlines()[bool(housekeeping) :] == [dashboard_off_line(housekeeping)]
    assert dashboard_off_line([]) == (
        "Ray dashboard: off (bench.py run --dashboard turns it on to watch the trials live); with no housekeeping CPU "
        "(--housekeeping-cpus) its processes would share the trials' CPUs"
    )
    names = [" ".join(p.cmdline()) for p in ray_processes()]
    assert not [n for n in names if n.startswith("ray-dashboard-")]  # the dashboard's module processes
    heads = [p for p in ray_processes() if any(part.endswith("dashboard/dashboard.py") for part in p.cmdline())]
    for head in heads:
        assert "--disable-frontend" in head.cmdline()
        # it still opens its metrics port (44227); not the page's (ray_session's default 8265)
        assert 8265 not in {c.laddr.port for c in head.net_connections("tcp") if c.status == psutil.CONN_LISTEN}


def test_settle_waits_on_each_node_and_reports_its_busy_fraction(ray_without_dashboard, capsys):
    ips = [node.ip for node in alive_nodes()]
    started = time.monotonic()
    settled = settle(ips, quiet=False)
    elapsed = time.monotonic() - started
    assert list(settled) == ips == [ray.util.get_node_ip_address()]
    waited, busy = settled[ips[0]]
    assert 0.0 <= busy <= 1.0
    # whole 1 s windows: the first quiet one ends the wait, or the 60 s limit does
    assert waited == int(waited) and (1 <= waited < 60 if busy < 0.10 else waited == 60)
    assert waited <= elapsed < waited + 10  # the task's own start-up and the round trip
    assert capsys.readouterr().out == f"node {ips[0]}: waited {waited:.0f} s for its CPUs to settle: {busy:.0%} busy\n"


def test_settle_leaves_out_a_node_that_never_answers(ray_without_dashboard, capsys):
    started = time.monotonic()
    assert settle(["10.9.9.9"], quiet=True, timeout_s=1) == {}  # no such node: its task can never be scheduled
    assert time.monotonic() - started < 5
    assert capsys.readouterr().out == "node 10.9.9.9: no settle wait: GetTimeoutError\n"


@pytest.mark.parametrize("flag", ["--dashboard", "--no-dashboard"])
def test_a_dashboard_flag_with_address_exits_2_before_starting_ray(flag):
    done = subprocess.run(
        [sys.executable, "bench.py", "run", "--address", "auto", flag],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == (
        "bench.py: error: --dashboard/--no-dashboard apply to a Ray started here; with --address the cluster's head "
        "decides (ray start --include-dashboard=true|false)"
    )
