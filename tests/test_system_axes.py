"""The system axes (README.md, "Compilers and the system under the trial"): OpenMP binding and wait policy, SMT
siblings, NUMA memory binding and the worker's nice value. Each value changes what it claims, read back from a real
worker where this node can run it, and each value this node cannot honour is an unsupported row with the reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hwctl.cores import physical_cores, select_cpus
from hwctl.numa import numa_command, numa_unsupported_reason, parse_numa_maps, read_nodes
from hwctl.openmp import openmp_environment, parse_display_env, strip_display_env
from tests.conftest import REPO_ROOT, TINY
from tests.test_cores import make_sysfs
from trainables.config import build_config
from trainables.launcher import Unsupported, build_worker_env, resolve_resources, run_trial, unsupported_reason

ALLOWED = sorted(os.sched_getaffinity(0))
SMALL = TINY | {"depth": 1, "width": 32, "heads": 2, "seq_len": 16, "batch_size": 2, "measure_steps": 2}

# what torch's libgomp printed here (OMP_DISPLAY_ENV=verbose) for OMP_PLACES='{1}' OMP_PROC_BIND=close
# OMP_WAIT_POLICY=passive: a blank line, then the block
DISPLAY_OLD = """\
some earlier line

OPENMP DISPLAY ENVIRONMENT BEGIN
  _OPENMP = '201511'
  OMP_DYNAMIC = 'FALSE'
  OMP_NESTED = 'FALSE'
  OMP_NUM_THREADS = '1'
  OMP_SCHEDULE = 'DYNAMIC'
  OMP_PROC_BIND = 'CLOSE'
  OMP_PLACES = '{1}'
  OMP_STACKSIZE = '0'
  OMP_WAIT_POLICY = 'PASSIVE'
  OMP_THREAD_LIMIT = '4294967295'
  OMP_MAX_ACTIVE_LEVELS = '2147483647'
  OMP_CANCELLATION = 'FALSE'
  OMP_DEFAULT_DEVICE = '0'
  OMP_MAX_TASK_PRIORITY = '0'
  OMP_DISPLAY_AFFINITY = 'FALSE'
  OMP_AFFINITY_FORMAT = 'level %L thread %i affinity %A'
  GOMP_CPU_AFFINITY = ''
  GOMP_STACKSIZE = '0'
  GOMP_SPINCOUNT = '0'
OPENMP DISPLAY ENVIRONMENT END
Traceback (most recent call last):
"""
# GCC 12+ prefixes the scope of each value
DISPLAY_NEW = """\
OPENMP DISPLAY ENVIRONMENT BEGIN
  _OPENMP = '201511'
  [host] OMP_DYNAMIC = 'FALSE'
  [host] OMP_NUM_THREADS = '4'
  [device] OMP_NUM_THREADS = '8'
  [host] OMP_PROC_BIND = 'SPREAD'
  [host] OMP_PLACES = '{0,4},{1,5}'
  [host] OMP_WAIT_POLICY = 'ACTIVE'
  [all] OMP_CANCELLATION = 'FALSE'
  [host] GOMP_SPINCOUNT = '30000000000'
OPENMP DISPLAY ENVIRONMENT END
"""


# ---- OpenMP ---------------------------------------------------------------------------------------------------
def test_openmp_autos_keep_the_pinned_places_and_binding():
    assert openmp_environment([1, 0], "compact") == {"OMP_PLACES": "{1},{0}", "OMP_PROC_BIND": "close"}
    assert openmp_environment([0, 1], "spread") == {"OMP_PLACES": "{0},{1}", "OMP_PROC_BIND": "spread"}
    assert openmp_environment(None, "none") == {}  # unpinned: the runtime's (no binding)


def test_openmp_values_become_the_variables_libgomp_reads():
    env = openmp_environment([0, 1], "compact", "false", "threads", "passive", 0)
    assert env == {
        "OMP_PLACES": "threads",
        "OMP_PROC_BIND": "false",
        "OMP_WAIT_POLICY": "passive",
        "GOMP_SPINCOUNT": "0",
    }
    assert openmp_environment(None, "none", places="cores") == {"OMP_PLACES": "cores", "OMP_PROC_BIND": "false"}
    assert openmp_environment([0], "spread", "close", "sockets") == {"OMP_PLACES": "sockets", "OMP_PROC_BIND": "close"}


def test_the_worker_env_asks_libgomp_to_display_its_settings_for_torch_only():
    cfg = build_config(TINY | {"omp_wait": "active", "gomp_spincount": 5000})
    env = build_worker_env(cfg, 1, [0], {"OMP_PLACES": "{7}", "OMP_PROC_BIND": "master"})
    assert (env["OMP_PLACES"], env["OMP_PROC_BIND"], env["OMP_WAIT_POLICY"], env["GOMP_SPINCOUNT"]) == (
        "{0}",
        "close",
        "active",
        "5000",
    )
    assert env["OMP_DISPLAY_ENV"] == "verbose"  # "true" leaves out GOMP_SPINCOUNT
    numpy_env = build_worker_env(build_config(TINY | {"framework": "numpy"}), 1, [0], {})
    assert "OMP_DISPLAY_ENV" not in numpy_env


def test_the_display_block_is_parsed_and_stripped():
    old = parse_display_env(DISPLAY_OLD)
    assert (old["OMP_PROC_BIND"], old["OMP_PLACES"], old["OMP_WAIT_POLICY"], old["OMP_NUM_THREADS"]) == (
        "CLOSE",
        "{1}",
        "PASSIVE",
        "1",
    )
    assert old["_OPENMP"] == "201511" and old["GOMP_SPINCOUNT"] == "0" and old["GOMP_CPU_AFFINITY"] == ""
    new = parse_display_env(DISPLAY_NEW + DISPLAY_OLD)  # the first block: the worker's own
    assert new["OMP_NUM_THREADS"] == "4" and new["OMP_PLACES"] == "{0,4},{1,5}"  # [host], not [device]
    assert (new["OMP_WAIT_POLICY"], new["GOMP_SPINCOUNT"], new["OMP_CANCELLATION"]) == (
        "ACTIVE",
        "30000000000",
        "FALSE",
    )
    assert parse_display_env("no OpenMP here\n") is None
    assert strip_display_env(DISPLAY_NEW + DISPLAY_OLD) == "some earlier line\n\nTraceback (most recent call last):\n"


# ---- SMT ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "count, policy, expected",
    [
        (2, "compact", [0, 4]),  # one physical core, both its threads
        (4, "compact", [0, 4, 1, 5]),  # socket 0's two cores, pair by pair
        (4, "spread", [0, 4, 2, 6]),  # a core on each socket
        (8, "compact", [0, 4, 1, 5, 2, 6, 3, 7]),
    ],
)
def test_siblings_take_whole_pairs(tmp_path, count, policy, expected):
    allowed = make_sysfs(tmp_path, sockets=2, cores=2, smt=2)
    chosen = select_cpus(count, policy, tmp_path, allowed, smt="siblings")
    assert chosen == expected
    assert physical_cores(chosen, tmp_path) == count // 2
    # smt=cores (the default) takes physical cores first: as many cores as CPUs, up to 4
    assert physical_cores(select_cpus(count, policy, tmp_path, allowed), tmp_path) == min(count, 4)


def test_sibling_places_put_neighbouring_threads_on_one_core(tmp_path):
    make_sysfs(tmp_path, sockets=1, cores=4, smt=2)
    cfg = build_config(TINY | {"cores": 4, "threads": 2, "smt": "siblings"})
    threads, cpus = resolve_resources(cfg, set(range(8)), tmp_path)
    assert (threads, cpus) == (2, [0, 4, 1, 5])
    # close binding: thread 0 on place {0}, thread 1 on {4}, its sibling
    assert build_worker_env(cfg, threads, cpus, {})["OMP_PLACES"] == "{0},{4},{1},{5}"


def test_siblings_that_cannot_be_had_are_unsupported(tmp_path):
    no_smt, smt = tmp_path / "no-smt", tmp_path / "smt"
    make_sysfs(no_smt, sockets=1, cores=4, smt=1)
    make_sysfs(smt, sockets=1, cores=4, smt=2)  # cpus 0-3 and their siblings 4-7
    siblings = {"smt": "siblings"}
    assert (
        unsupported_reason(build_config(TINY | siblings | {"threads": 2}), {0, 1, 2, 3}, no_smt)
        == "smt='siblings' needs SMT: this node has 1 thread per core"
    )
    assert (
        unsupported_reason(build_config(TINY | siblings | {"threads": 3}), set(range(8)), smt)
        == "smt='siblings' puts threads on sibling pairs: it needs an even count of CPUs, not 3"
    )
    # the trial may use one whole pair only (0 and 4): 4 threads need two
    assert unsupported_reason(build_config(TINY | siblings | {"threads": 4}), {0, 1, 2, 4}, smt) == (
        "smt='siblings': 4 CPUs need 2 physical cores with two free siblings each; this trial's CPUs have 1"
    )
    assert resolve_resources(build_config(TINY | siblings | {"threads": 2}), {0, 1, 2, 4}, smt) == (2, [0, 4])
    with pytest.raises(Unsupported, match="needs SMT"):
        resolve_resources(build_config(TINY | siblings), {0, 1, 2, 3}, no_smt)


# ---- NUMA -----------------------------------------------------------------------------------------------------
def make_nodes(root: Path, cpulists: dict[int, str], with_memory: str | None = None) -> Path:
    node_dir = root / "devices/system/node"
    for node, cpulist in cpulists.items():
        (node_dir / f"node{node}").mkdir(parents=True)
        (node_dir / f"node{node}" / "cpulist").write_text(cpulist + "\n")
    (node_dir / "has_memory").write_text((with_memory or ",".join(map(str, cpulists))) + "\n")
    return root


def test_numa_nodes_are_read_from_sysfs(tmp_path):
    assert read_nodes(make_nodes(tmp_path / "two", {0: "0-3", 1: "4-7"})) == {0: [0, 1, 2, 3], 1: [4, 5, 6, 7]}
    assert read_nodes(tmp_path / "no-numa") == {0: []}  # a kernel without NUMA: one node


def test_numa_values_start_the_worker_under_numactl():
    assert numa_command(None) == []
    assert numa_command("local", "/usr/bin/numactl") == ["/usr/bin/numactl", "--localalloc"]
    assert numa_command("interleave", "/usr/bin/numactl") == ["/usr/bin/numactl", "--interleave=all"]
    assert numa_command("1", "/usr/bin/numactl") == ["/usr/bin/numactl", "--membind=1"]


def test_numa_values_this_node_cannot_honour(tmp_path, monkeypatch):
    one = make_nodes(tmp_path / "one", {0: "0-3"})
    two = make_nodes(tmp_path / "two", {0: "0-1", 1: "2-3", 2: ""}, with_memory="0-1")
    numactl = "/usr/bin/numactl"
    assert numa_unsupported_reason(None, one, numactl) is None
    assert numa_unsupported_reason("local", one, numactl) is None
    assert numa_unsupported_reason("interleave", one, numactl) == (
        "numa='interleave' needs several NUMA nodes: this node has one (node 0), where only numa='local' applies"
    )
    assert "needs several NUMA nodes" in numa_unsupported_reason("0", one, numactl)
    for value in ("local", "interleave", "0", "1"):
        assert numa_unsupported_reason(value, two, numactl) is None, value
    assert numa_unsupported_reason("3", two, numactl) == "numa='3': no such NUMA node (this node has nodes 0,1,2)"
    assert numa_unsupported_reason("2", two, numactl) == (
        "numa='2': NUMA node 2 has no memory (nodes with memory: 0,1)"
    )
    monkeypatch.setattr("hwctl.numa.shutil.which", lambda name: None)
    assert numa_unsupported_reason("local", one) == (
        "numa='local' binds memory with numactl, which this node lacks (install the numactl package)"
    )
    # the launcher's check, as plan validation makes it: an unsupported row with the reason
    make_sysfs(one, sockets=1, cores=4, smt=1)
    row = run_trial(build_config(TINY | {"numa": "local"}), allowed_cpus={0}, sysfs_root=one)
    assert (row["status"], row["error"]) == ("unsupported", numa_unsupported_reason("local", one))


NUMA_MAPS = """\
55f4e0363000 interleave:0-1 file=/usr/bin/python3.11 mapped=2 N0=1 N1=1 kernelpagesize_kB=4
55f4f53e8000 interleave:0-1 heap anon=40 dirty=40 active=0 N0=20 N1=20 kernelpagesize_kB=4
7f9c97708000 bind:1 anon=1000 dirty=1000 N1=1000 kernelpagesize_kB=4
7f9c9770b000 interleave:0-1 file=/usr/lib/x86_64-linux-gnu/libc.so.6 mapped=37 mapmax=15 N0=37 kernelpagesize_kB=4
7f9c97800000 prefer (many):0-1 file=/dev/hugepages/x huge dirty=2 N1=2 kernelpagesize_kB=2048
7f9c978f8000 interleave:0-1
7ffc1a000000 interleave:0-1 stack anon=9 dirty=9 N0=9 kernelpagesize_kB=4
"""


def test_numa_maps_give_the_heaps_policy_and_the_pages_per_node():
    policy, pages = parse_numa_maps(NUMA_MAPS, page_kb=4)
    assert policy == "interleave:0-1"  # the heap's, though more pages are bound elsewhere
    assert pages == {"N0": 1 + 20 + 37 + 9, "N1": 1 + 20 + 1000 + 2 * 512}  # two 2 MiB pages = 1024 base pages
    without_heap = "\n".join(line for line in NUMA_MAPS.splitlines() if " heap " not in line)
    assert parse_numa_maps(without_heap, page_kb=4)[0] == "prefer (many):0-1"  # the most resident pages
    assert parse_numa_maps("", page_kb=4) == (None, {})


# ---- real workers: what the runtime and the kernel report ---------------------------------------------------------
WORKER_CASES = {
    "auto": {},
    "passive-unbound": {"omp_wait": "passive", "omp_proc_bind": "false", "gomp_spincount": 1000, "numa": "local"},
    "active-spread-cores": {"omp_wait": "active", "omp_proc_bind": "spread", "omp_places": "cores"},
}


@pytest.fixture(scope="module")
def worker_rows(data_dir, tmp_path_factory) -> dict[str, dict]:
    output = tmp_path_factory.mktemp("output")

    def run(index_and_values):
        index, values = index_and_values
        cpu = ALLOWED[index % len(ALLOWED)]  # one CPU each, side by side where there are two
        return run_trial(build_config(SMALL | values), data_dir=data_dir, output_dir=output, allowed_cpus={cpu})

    with ThreadPoolExecutor(2) as pool:
        rows = pool.map(run, enumerate(WORKER_CASES.values()))
        return dict(zip(WORKER_CASES, rows, strict=True))


def test_auto_openmp_reads_back_as_todays_pinned_binding(worker_rows):
    row = worker_rows["auto"]
    assert row["status"] == "ok", row.get("error")
    runtime = row["omp_runtime"]
    assert (runtime["OMP_PROC_BIND"], runtime["OMP_PLACES"], runtime["OMP_NUM_THREADS"]) == (
        "CLOSE",
        "{" + row["affinity"] + "}",
        "1",
    )
    assert row["physical_cores"] == 1 and row["numa_policy"] == "default"
    # the pages numa_maps lists are the worker's resident memory as the steps end: torch alone is over 50 MB, and
    # it cannot exceed the peak (which may come from building the token cache, freed before the steps)
    resident_mb = sum(row["numa_pages"].values()) * os.sysconf("SC_PAGE_SIZE") / 2**20
    assert 50 < resident_mb <= 1.05 * row["peak_rss_mb"], (resident_mb, row["peak_rss_mb"])


def test_openmp_values_read_back_from_the_runtime(worker_rows):
    passive, active = worker_rows["passive-unbound"], worker_rows["active-spread-cores"]
    assert passive["status"] == active["status"] == "ok", (passive.get("error"), active.get("error"))
    p, a = passive["omp_runtime"], active["omp_runtime"]
    assert (p["OMP_WAIT_POLICY"], p["GOMP_SPINCOUNT"], p["OMP_PROC_BIND"]) == ("PASSIVE", "1000", "FALSE")
    assert (a["OMP_WAIT_POLICY"], a["OMP_PROC_BIND"]) == ("ACTIVE", "SPREAD")
    assert a["OMP_PLACES"] == "{" + active["affinity"] + "}"  # 'cores' inside the worker's one-CPU mask
    assert int(a["GOMP_SPINCOUNT"]) > int(worker_rows["auto"]["omp_runtime"]["GOMP_SPINCOUNT"])  # spins longer
    assert json.loads(passive["env"])["OMP_WAIT_POLICY"] == "passive"


def test_numa_local_reads_back_from_numa_maps(worker_rows):
    row = worker_rows["passive-unbound"]
    assert row["numa_policy"] == "local" and row["numa"] == "local"
    assert set(row["numa_pages"]) <= {f"N{n}" for n in read_nodes()} and sum(row["numa_pages"].values()) > 0


def test_a_worker_started_at_nice_10_runs_at_0_where_permitted():
    assignments = [f"{k}={v}" for k, v in (SMALL | {"cores": 1}).items()]
    done = subprocess.run(
        ["nice", "-n", "10", sys.executable, "bench.py", "trial", *assignments, "--json"],
        cwd=REPO_ROOT,
        env=os.environ | {"HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    row = json.loads(done.stdout)
    assert row["worker_nice"] == (0 if os.geteuid() == 0 else min(os.getpriority(os.PRIO_PROCESS, 0) + 10, 19))
    assert "OPENMP DISPLAY" not in done.stderr  # the block went to the worker's stderr file, parsed there
    assert row["omp_runtime"]["OMP_NUM_THREADS"] == "1"
