"""The hardware fingerprint on this real machine, and on a simulated 2-socket NUMA tree (sysfs and
/proc laid out in a temp dir and passed as roots: nothing is patched)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hwctl.fingerprint import fingerprint_id, full_fingerprint, hardware_fingerprint, host_fingerprint
from hwctl.fingerprint_text import format_fingerprint
from hwctl.proc_sysfs import ISA_FLAGS, cpu_ranges, cpuinfo_file
from tests.conftest import CPUINFO_FIXTURES, REPO_ROOT

OLD_COLUMNS = (
    "host",
    "hw_cpu_vendor",
    "hw_cpu_model",
    "hw_arch",
    "hw_logical_cores",
    "hw_physical_cores",
    "hw_sockets",
    "hw_isa",
    "hw_kernel",
    "sw_python",
    "sw_torch",
    "sw_numpy",
    "sw_ray",
)
NEW_COLUMNS = (
    "hw_smt",
    "hw_numa_nodes",
    "hw_l1d_kb",
    "hw_l2_kb",
    "hw_l3_kb",
    "hw_memory_gb",
    "hw_cpufreq_driver",
    "hw_governor",
    "hw_turbo",
    "hw_rapl",
    "sw_blas",
    "hw_fingerprint_id",
)


# ---- this machine -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real() -> dict:
    return full_fingerprint()


def test_real_machine_topology_and_isa(real):
    assert real["topology"]["logical_cores"] == os.cpu_count()
    assert 1 <= real["topology"]["physical_cores"] <= real["topology"]["logical_cores"]
    proc_flags = set()
    for line in cpuinfo_file().read_text().splitlines():  # /proc/cpuinfo, or BENCH_CPUINFO's simulated CPU
        if line.startswith(("flags", "Features")):
            proc_flags |= set(line.split(":", 1)[1].split())
    assert set(real["cpu"]["isa"]) == set(ISA_FLAGS) & proc_flags
    total_kb = int(
        next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")).split()[1]
    )
    assert real["memory"]["total_kb"] == total_kb


def test_real_machine_says_why_cpufreq_is_missing(real):
    policies = list(Path("/sys/devices/system/cpu/cpufreq").glob("policy*"))
    if policies:
        assert real["cpufreq"]["available"] and real["cpufreq"]["max_khz"] > 0
    else:  # this VM
        assert real["cpufreq"] == {
            "available": False,
            "reason": "no cpufreq policy in /sys/devices/system/cpu/cpufreq",
        }
        assert host_fingerprint()["hw_cpufreq_driver"] is None
        assert "cpufreq      unavailable: no cpufreq policy" in format_fingerprint(real)


def test_real_machine_software_and_json(real):
    import torch

    assert real["software"]["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert real["software"]["torch"] == torch.__version__
    assert any(p["user_api"] == "blas" for p in real["software"]["threadpools"])  # numpy's BLAS at least
    assert json.loads(json.dumps(real)) == real


def test_fingerprint_id_is_stable_and_shared_by_both_views(real):
    again = full_fingerprint()
    assert fingerprint_id(again) == fingerprint_id(real) == real["fingerprint_id"]
    assert len(real["fingerprint_id"]) == 12
    # the row column and the peak cache key come from the cheap view: it must give the same id
    assert host_fingerprint()["hw_fingerprint_id"] == real["fingerprint_id"]


def test_row_columns_keep_old_names_and_add_new_ones(real):
    row = host_fingerprint()
    assert set(OLD_COLUMNS + NEW_COLUMNS) <= set(row)
    assert row["hw_logical_cores"] == os.cpu_count()
    assert row["hw_isa"] == ",".join(real["cpu"]["isa"])
    assert row["hw_memory_gb"] == pytest.approx(real["memory"]["total_kb"] / 2**20, abs=0.06)
    assert row["hw_l1d_kb"] == real["caches"]["L1d"]["size_kb"] > 0
    assert row["hw_rapl"] is real["rapl"]["available"]
    assert "openblas" in row["sw_blas"].split(",") or "mkl" in row["sw_blas"].split(",")
    assert all(v is None or isinstance(v, (str, int, float, bool)) for v in row.values())  # Parquet scalars


SIMULATED = {
    "zen3-avx2": ("AMD EPYC 7763 64-Core Processor", ["avx2", "fma"]),
    "zen5-avx512": (
        "AMD EPYC 9755 128-Core Processor",
        ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx_vnni"],
    ),
}


def test_a_simulated_cpu_replaces_the_cpuinfo_and_nothing_else(simulated_cpu):
    import torch

    model, isa = SIMULATED[simulated_cpu]
    fp = full_fingerprint()
    assert (fp["cpu"]["vendor"], fp["cpu"]["model"], fp["cpu"]["display"]) == ("AuthenticAMD", model, model)
    assert fp["cpu"]["isa"] == isa and host_fingerprint.__wrapped__()["hw_isa"] == ",".join(isa)
    assert fp["cpu"]["source"] == str(CPUINFO_FIXTURES[simulated_cpu]) and "py_cpuinfo" not in fp["cpu"]
    # cores, memory and torch's dispatch stay this machine's
    assert fp["topology"]["logical_cores"] == os.cpu_count()
    assert fp["software"]["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    # a process started from here inherits the simulated CPU
    done = subprocess.run(
        [sys.executable, "bench.py", "hw", "--json", "--no-peaks"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    cpu = json.loads(done.stdout)["cpu"]
    assert (cpu["model"], cpu["isa"], cpu["source"]) == (model, isa, str(CPUINFO_FIXTURES[simulated_cpu]))


def test_cpu_ranges():
    assert cpu_ranges([5, 0, 1, 4, 2, 9]) == "0-2,4-5,9"
    assert cpu_ranges([]) == ""


# ---- a simulated 2-socket x 2-core x 2-SMT machine ----------------------------------------------
def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def _cpu_id(socket: int, core: int, thread: int) -> int:
    # Linux numbers first threads of every core first, then the SMT siblings
    return thread * 4 + socket * 2 + core


SOCKET_CPUS = {0: "0-1,4-5", 1: "2-3,6-7"}


@pytest.fixture
def two_sockets(tmp_path) -> tuple[Path, Path]:
    sysfs, proc = tmp_path / "sys", tmp_path / "proc"
    cpu_dir = sysfs / "devices/system/cpu"
    _write(cpu_dir / "online", "0-7")
    _write(cpu_dir / "smt/active", "1")
    for socket in (0, 1):
        for core in (0, 1):
            siblings = f"{_cpu_id(socket, core, 0)},{_cpu_id(socket, core, 1)}"
            for thread in (0, 1):
                cpu = _cpu_id(socket, core, thread)
                _write(cpu_dir / f"cpu{cpu}/topology/physical_package_id", str(socket))
                _write(cpu_dir / f"cpu{cpu}/topology/core_id", str(core))
                caches = [
                    (1, "Data", "48K", siblings),
                    (1, "Instruction", "32K", siblings),
                    (2, "Unified", "2048K", siblings),
                    (3, "Unified", "32768K", SOCKET_CPUS[socket]),
                ]
                for index, (level, kind, size, shared) in enumerate(caches):
                    base = cpu_dir / f"cpu{cpu}/cache/index{index}"
                    for name, value in (("level", level), ("type", kind), ("size", size), ("shared_cpu_list", shared)):
                        _write(base / name, str(value))
                policy = cpu_dir / f"cpufreq/policy{cpu}"
                for name, value in (
                    ("related_cpus", cpu),
                    ("scaling_driver", "intel_pstate"),
                    ("scaling_governor", "powersave"),
                    ("cpuinfo_min_freq", 800000),
                    ("cpuinfo_max_freq", 3800000),
                    ("scaling_min_freq", 800000),
                    ("scaling_max_freq", 3800000),
                    ("base_frequency", 2100000),
                ):
                    _write(policy / name, str(value))
    _write(cpu_dir / "intel_pstate/no_turbo", "0")
    for node in (0, 1):
        _write(sysfs / f"devices/system/node/node{node}/cpulist", SOCKET_CPUS[node])
        _write(sysfs / f"devices/system/node/node{node}/meminfo", f"Node {node} MemTotal:  {(node + 1) * 1000} kB")
    _write(sysfs / "class/powercap/intel-rapl:0/name", "package-0")
    _write(sysfs / "class/powercap/intel-rapl:0/energy_uj", "123456")
    _write(sysfs / "class/powercap/intel-rapl:1/name", "package-1")
    (sysfs / "class/powercap/intel-rapl:1/energy_uj").mkdir()  # reading it fails, as a root-only file does
    _write(
        proc / "cpuinfo",
        "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Simulated Xeon\n"
        "flags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 amx_tile amx_bf16\n\nprocessor\t: 1",
    )
    _write(proc / "meminfo", "MemTotal:       67108864 kB\nMemFree:        1000 kB")
    return sysfs, proc


def test_simulated_topology_numa_and_caches(two_sockets):
    sysfs, proc = two_sockets
    fp = full_fingerprint(sysfs, proc)
    topo = fp["topology"]
    assert (topo["sockets"], topo["physical_cores"], topo["logical_cores"], topo["threads_per_core"]) == (2, 4, 8, 2)
    assert topo["smt_active"] is True
    assert fp["numa"]["nodes"] == [
        {"node": 0, "cpus": "0-1,4-5", "memory_kb": 1000},
        {"node": 1, "cpus": "2-3,6-7", "memory_kb": 2000},
    ]
    l3 = fp["caches"]["L3"]
    assert l3["instances"] == [{"size_kb": 32768, "cpus": "0-1,4-5"}, {"size_kb": 32768, "cpus": "2-3,6-7"}]
    assert (l3["count"], l3["size_kb"], l3["total_kb"]) == (2, 32768, 65536)
    assert [i["cpus"] for i in fp["caches"]["L2"]["instances"]] == ["0,4", "1,5", "2,6", "3,7"]
    assert (fp["caches"]["L1d"]["size_kb"], fp["caches"]["L1i"]["size_kb"], fp["caches"]["L2"]["size_kb"]) == (
        48,
        32,
        2048,
    )
    assert fp["cpu"]["isa"] == ["avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"]
    assert fp["cpu"]["model"] == fp["cpu"]["display"] == "Simulated Xeon"  # py-cpuinfo describes the real CPU only
    assert fp["memory"] == {"total_kb": 67108864, "total_gib": 64.0}
    assert json.loads(json.dumps(fp)) == fp


def test_simulated_cpufreq_turbo_rapl(two_sockets):
    sysfs, proc = two_sockets
    fp = hardware_fingerprint(sysfs, proc)
    freq = fp["cpufreq"]
    assert freq["available"] and len(freq["policies"]) == 8
    assert (freq["driver"], freq["governor"]) == ("intel_pstate", "powersave")
    assert (freq["min_khz"], freq["max_khz"], freq["base_khz"]) == (800000, 3800000, 2100000)
    assert freq["policies"][7]["policy"] == "policy7" and freq["policies"][7]["cpus"] == "7"
    assert fp["turbo"]["available"] and fp["turbo"]["enabled"] is True
    assert fp["rapl"]["available"] is True
    assert [(d["name"], d["readable"]) for d in fp["rapl"]["domains"]] == [("package-0", True), ("package-1", False)]
    text = format_fingerprint(full_fingerprint(sysfs, proc))
    assert "node1: cpus 2-3,6-7, 0.0 GiB" in text
    assert "L3  32 MiB x2, shared by cpus 0-1,4-5 | 2-3,6-7" in text
    assert "driver intel_pstate, governor powersave, 0.80 GHz .. 3.80 GHz (base 2.10 GHz)" in text
    assert "turbo        on (" in text
    assert "readable: package-0" in text


def test_simulated_row_columns(two_sockets):
    sysfs, proc = two_sockets
    row = host_fingerprint(sysfs, proc / "cpuinfo")
    expected = {
        "hw_cpu_vendor": "GenuineIntel",
        "hw_cpu_model": "Simulated Xeon",
        "hw_sockets": 2,
        "hw_physical_cores": 4,
        "hw_logical_cores": 8,
        "hw_smt": 2,
        "hw_numa_nodes": 2,
        "hw_l1d_kb": 48,
        "hw_l2_kb": 2048,
        "hw_l3_kb": 32768,
        "hw_memory_gb": 64.0,
        "hw_cpufreq_driver": "intel_pstate",
        "hw_governor": "powersave",
        "hw_turbo": True,
        "hw_rapl": True,
        "hw_isa": "avx2,fma,avx512f,avx512_bf16,amx_tile,amx_bf16",
    }
    assert {k: row[k] for k in expected} == expected
    assert row["hw_fingerprint_id"] == fingerprint_id(hardware_fingerprint(sysfs, proc))


def test_fingerprint_id_follows_governor_and_turbo(two_sockets):
    sysfs, proc = two_sockets
    policies = sorted((sysfs / "devices/system/cpu/cpufreq").glob("policy*"))
    original = fingerprint_id(hardware_fingerprint(sysfs, proc))
    for policy in policies:
        _write(policy / "scaling_governor", "performance")
    performance = fingerprint_id(hardware_fingerprint(sysfs, proc))
    _write(sysfs / "devices/system/cpu/intel_pstate/no_turbo", "1")
    no_turbo = hardware_fingerprint(sysfs, proc)
    assert no_turbo["turbo"]["enabled"] is False
    assert len({original, performance, fingerprint_id(no_turbo)}) == 3
    for policy in policies:
        _write(policy / "scaling_governor", "powersave")
    _write(sysfs / "devices/system/cpu/intel_pstate/no_turbo", "0")
    assert fingerprint_id(hardware_fingerprint(sysfs, proc)) == original
    # a value the peaks do not depend on (free memory) leaves the id alone
    _write(proc / "meminfo", "MemTotal:       67108864 kB\nMemFree:        999999 kB")
    assert fingerprint_id(hardware_fingerprint(sysfs, proc)) == original


def test_missing_sections_say_why(tmp_path):
    sysfs, proc = tmp_path / "sys", tmp_path / "proc"
    _write(sysfs / "devices/system/cpu/online", "0")
    _write(proc / "cpuinfo", "processor\t: 0\nvendor_id\t: X\nmodel name\t: Y\nflags\t\t: sse2")
    fp = hardware_fingerprint(sysfs, proc)
    assert fp["cpufreq"] == {"available": False, "reason": f"no cpufreq policy in {sysfs}/devices/system/cpu/cpufreq"}
    assert fp["turbo"]["available"] is False and fp["turbo"]["enabled"] is None and "no_turbo" in fp["turbo"]["reason"]
    assert fp["rapl"]["available"] is False and "powercap" in fp["rapl"]["reason"]
    assert fp["numa"]["available"] is False and fp["caches"] == {}
    assert fp["memory"] == {"total_kb": None, "total_gib": None}
    assert "caches       unavailable: no cache/index* in sysfs" in format_fingerprint(fp)
