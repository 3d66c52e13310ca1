"""The hardware axes of a trial: cores and core lists, ISA caps, frequency settings around a real
worker on a simulated sysfs, and the telemetry recorded with it."""

import json
import os
import shutil
import socket

import pytest

from hwctl.fingerprint import fingerprint_id, hardware_fingerprint
from hwctl.isa import isa_environment, isa_unsupported_reason
from hwctl.microbench import CACHE_FILE
from hwctl.telemetry import FREQ_METHOD, EnergyCounter
from tests.simsysfs import make_cpufreq_tree, make_rapl, state
from tests.test_cores import make_sysfs
from trainables.config import build_config
from trainables.launcher import Unsupported, resolve_resources, run_trial, unsupported_reason

FOUR = {0, 1, 2, 3}


@pytest.mark.parametrize(
    "values, threads, cpus",
    [
        ({}, 4, [0, 1, 2, 3]),
        ({"cores": 2}, 2, [0, 1]),
        ({"threads": 1}, 1, [0]),  # pinned: the thread's one core
        ({"threads": 1, "pinning": "none"}, 1, None),  # unpinned: the OS may use every core
        ({"cores": 2, "pinning": "none"}, 2, [0, 1]),  # fewer cores: the mask shrinks, threads stay unbound
        ({"cores": 3, "threads": 1}, 1, [0, 1, 2]),
        ({"core_list": "1,3"}, 2, [1, 3]),
    ],
)
def test_cores_threads_and_core_lists(tmp_path, values, threads, cpus):
    make_sysfs(tmp_path, sockets=1, cores=4, smt=1)
    assert resolve_resources(build_config(values), FOUR, tmp_path) == (threads, cpus)


def test_more_cores_than_the_node_has(tmp_path):
    make_sysfs(tmp_path, sockets=1, cores=4, smt=1)
    with pytest.raises(Unsupported, match="cores=8 exceeds the 4 cores available"):
        resolve_resources(build_config({"cores": 8}), FOUR, tmp_path)
    with pytest.raises(Unsupported, match="core_list=2,7: CPUs 7 are not available"):
        resolve_resources(build_config({"core_list": "2,7"}), FOUR, tmp_path)


def test_isa_caps():
    assert isa_environment("avx2") == {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    }
    assert isa_unsupported_reason("amx", {"avx2", "fma", "avx512f"}) == "isa=amx: this CPU lacks amx_bf16, amx_tile"
    assert isa_unsupported_reason("avx2", {"avx2", "fma"}) is None


def test_isa_cap_reaches_the_worker(tiny, data_dir, tmp_path):
    import torch

    cfg = build_config(tiny | {"isa": "avx2"})
    if isa_unsupported_reason("avx2"):  # cpuinfo (this CPU's, or BENCH_CPUINFO's) lacks AVX2
        assert run_trial(cfg, data_dir=data_dir, output_dir=tmp_path)["status"] == "unsupported"
        return
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        pytest.skip(f"needs a CPU with AVX2: torch dispatches to {torch.backends.cpu.get_cpu_capability()} here")
    row = run_trial(cfg, data_dir=data_dir, output_dir=tmp_path)
    assert row["status"] == "ok", row.get("error")
    assert json.loads(row["env"])["ATEN_CPU_CAPABILITY"] == "avx2"
    assert row["torch_cpu_capability"] == "AVX2"  # read back inside the worker


def test_a_simulated_cpu_decides_the_isa_axis_and_reaches_the_worker(simulated_cpu, tiny, data_dir, tmp_path):
    avx512 = build_config(tiny | {"isa": "avx512"})
    if simulated_cpu == "zen3-avx2":
        reason = "isa=avx512: this CPU lacks avx512bw, avx512dq, avx512f, avx512vl"
        assert unsupported_reason(avx512) == reason
        row = run_trial(avx512, data_dir=data_dir, output_dir=tmp_path)
        assert (row["status"], row["error"]) == ("unsupported", reason)
    else:
        assert unsupported_reason(avx512) is None
    # the worker reads the same cpuinfo: its matmul peak is filed under the simulated CPU's fingerprint
    shutil.copytree(data_dir / "tokens", tmp_path / "data" / "tokens")
    row = run_trial(build_config(tiny), data_dir=tmp_path / "data", output_dir=tmp_path)
    assert row["status"] == "ok", row.get("error")
    peaks = json.loads((tmp_path / "data" / "hw" / CACHE_FILE).read_text())
    assert list(peaks) == [f"{socket.gethostname()}|{fingerprint_id(hardware_fingerprint())}"]


def test_frequency_settings_without_cpufreq_are_unsupported(tiny, tmp_path):
    empty = tmp_path / "sys"
    (empty / "devices/system/cpu").mkdir(parents=True)
    cfg = build_config(tiny | {"freq_ghz": 2.0})
    assert unsupported_reason(cfg, sysfs_root=empty).startswith("freq_ghz: no cpufreq policy")
    row = run_trial(cfg, sysfs_root=empty, journal_path=tmp_path / "j.json")
    assert row["status"] == "unsupported" and "no cpufreq policy" in row["error"]


def test_settings_applied_during_the_trial_and_restored_after(tiny, data_dir, tmp_path):
    root = make_cpufreq_tree(tmp_path / "sys", cpus=max(os.sched_getaffinity(0)) + 1)
    before = state(root)
    cfg = build_config(tiny | {"freq_ghz": 1.6, "governor": "performance", "turbo": False})
    assert unsupported_reason(cfg, sysfs_root=root) is None
    row = run_trial(cfg, data_dir=data_dir, output_dir=tmp_path, sysfs_root=root, journal_path=tmp_path / "j.json")
    assert row["status"] == "ok", row.get("error")
    applied = json.loads(row["hw_settings_applied"])
    assert applied["devices/system/cpu/cpufreq/policy0/scaling_max_freq"] == "1600000"
    assert applied["devices/system/cpu/intel_pstate/no_turbo"] == "1"
    assert state(root) == before and not (tmp_path / "j.json").exists()
    # the simulated scaling_cur_freq, read by the worker at the edges of its measured steps
    assert (row["effective_freq_ghz"], row["effective_freq_method"]) == (pytest.approx(2.4), FREQ_METHOD)
    assert row["loadavg_before"] >= 0 and row["loadavg_after"] >= 0


def test_energy_counter(tmp_path):  # the frequency probe: tests/test_telemetry.py
    root = make_cpufreq_tree(tmp_path / "sys", cpus=2)
    domains = make_rapl(root, packages=2, energy_uj=1_000_000, max_range_uj=10_000_000)
    counter = EnergyCounter(root)
    counter.start()
    (domains[0] / "energy_uj").write_text("3500000\n")  # +2.5 J
    (domains[1] / "energy_uj").write_text("500000\n")  # wrapped: +9.5 J
    assert counter.stop()["energy_j"] == pytest.approx(12.0)
    assert EnergyCounter(tmp_path / "none").stop()["energy_j"] is None
