"""Frequency, governor and turbo control on a simulated sysfs tree, and its guaranteed restore."""

import json
import os
import signal
import subprocess
import sys

import pytest

from hwctl.control import ControlUnavailable, Frequency, Governor, Turbo, control_unavailable_reason, write_sysfs
from hwctl.journal import HardwareSettings, restore_pending
from tests.conftest import REPO_ROOT
from tests.simsysfs import make_cpufreq_tree, state

POLICY0 = "devices/system/cpu/cpufreq/policy0"


def test_set_and_read_back(tmp_path):
    root = make_cpufreq_tree(tmp_path / "sys")
    journal = tmp_path / "journal.json"
    hw = HardwareSettings(root, journal)
    hw.apply(freq_ghz=2.0, governor="performance", turbo=False)
    assert Governor(root).read()[f"{POLICY0}/scaling_governor"] == "performance"
    assert Frequency(root).read() == {
        f"devices/system/cpu/cpufreq/policy{i}/{n}": "2000000"
        for i in range(4)
        for n in ("scaling_min_freq", "scaling_max_freq")
    }
    assert Turbo(root).is_on() is False and (root / "devices/system/cpu/intel_pstate/no_turbo").read_text() == "1"
    saved = json.loads(journal.read_text())
    assert saved["pid"] == os.getpid() and saved["originals"][f"{POLICY0}/scaling_governor"] == "powersave"
    hw.restore()
    assert not journal.exists()


def test_restore_after_an_exception(tmp_path):
    root = make_cpufreq_tree(tmp_path / "sys")
    before = state(root)
    with pytest.raises(RuntimeError), HardwareSettings(root, tmp_path / "j.json") as hw:
        hw.apply(freq_ghz=3.6, governor="performance", turbo=False)
        assert state(root) != before
        raise RuntimeError("trial crashed")
    assert state(root) == before


def test_frequency_writes_keep_min_below_max(tmp_path):
    root = make_cpufreq_tree(tmp_path / "sys", cpus=1)
    (root / POLICY0 / "scaling_max_freq").write_text("1200000")
    (root / POLICY0 / "scaling_min_freq").write_text("800000")
    up = Frequency(root).writes_for(3.0)
    assert [f.rsplit("/", 1)[1] for f, _ in up] == ["scaling_max_freq", "scaling_min_freq"]
    (root / POLICY0 / "scaling_max_freq").write_text("3600000")
    down = Frequency(root).writes_for(1.0)
    assert [f.rsplit("/", 1)[1] for f, _ in down] == ["scaling_min_freq", "scaling_max_freq"]
    assert Frequency(root).steps_ghz() == [0.8, 1.2, 1.6, 2.0, 2.4, 2.8, 3.2, 3.6]


def test_generic_boost_file(tmp_path):
    root = make_cpufreq_tree(tmp_path / "sys", pstate=False, boost=True)
    assert Turbo(root).is_on() is True
    with HardwareSettings(root, tmp_path / "j.json") as hw:
        hw.apply(turbo=False)
        assert (root / "devices/system/cpu/cpufreq/boost").read_text() == "0"
    assert (root / "devices/system/cpu/cpufreq/boost").read_text() == "1"


def test_bad_values_and_missing_cpufreq(tmp_path):
    root = make_cpufreq_tree(tmp_path / "sys")
    with pytest.raises(ControlUnavailable, match=r"freq_ghz=5.0 is outside 0.80..3.60 GHz"):
        HardwareSettings(root, tmp_path / "j.json").apply(freq_ghz=5.0)
    with pytest.raises(ControlUnavailable, match="governor='ondemand' is not offered here"):
        HardwareSettings(root, tmp_path / "j.json").apply(governor="ondemand")
    assert not (tmp_path / "j.json").exists()  # nothing journaled, nothing written
    empty = tmp_path / "empty"
    (empty / "devices/system/cpu").mkdir(parents=True)
    assert "no cpufreq policy" in control_unavailable_reason("freq_ghz", 2.0, empty)
    assert "neither intel_pstate/no_turbo nor cpufreq/boost" in control_unavailable_reason("turbo", False, empty)


def test_only_known_paths_are_written(tmp_path):
    with pytest.raises(PermissionError, match="not a known cpufreq/boost file"):
        write_sysfs(tmp_path, "devices/system/cpu/cpu0/online", "0")
    with pytest.raises(PermissionError):
        write_sysfs(tmp_path, "devices/system/cpu/cpufreq/policy0/../../../../etc/passwd", "x")


def test_this_machine_reports_frequency_control_unavailable_or_works():
    reason = control_unavailable_reason("freq_ghz", 2.0)
    if not Frequency().files():
        assert reason.startswith("freq_ghz: no cpufreq policy in /sys/devices/system/cpu/cpufreq")


CHILD = """
import sys, time
from pathlib import Path
from hwctl.journal import HardwareSettings
with HardwareSettings(Path(sys.argv[1]), Path(sys.argv[2])) as hw:
    hw.apply(freq_ghz=1.6, governor="performance", turbo=False)
    print("applied", flush=True)
    time.sleep(60)
"""


def _start_child(root, journal):
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), str(journal)], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout.readline().strip() == "applied"
    return child


def test_restore_after_sigterm_to_a_child(tmp_path):
    root = make_cpufreq_tree(tmp_path / "sys")
    before = state(root)
    child = _start_child(root, tmp_path / "j.json")
    assert state(root) != before
    child.send_signal(signal.SIGTERM)
    child.wait(timeout=30)
    assert state(root) == before
    assert not (tmp_path / "j.json").exists()


def test_restore_from_the_journal_after_kill_9(tmp_path):
    root = make_cpufreq_tree(tmp_path / "sys")
    before = state(root)
    journal = tmp_path / "j.json"
    child = _start_child(root, journal)
    assert restore_pending(journal) is None  # its owner is alive: leave it alone
    child.kill()
    child.wait(timeout=30)
    assert state(root) != before and journal.exists()
    message = restore_pending(journal)
    assert message.startswith("restored 13 hardware settings left changed by process")
    assert state(root) == before and not journal.exists()


def test_bench_hw_restore_command(tmp_path):
    root = make_cpufreq_tree(tmp_path / "sys")
    before = state(root)
    journal = tmp_path / "j.json"
    child = _start_child(root, journal)
    child.kill()
    child.wait(timeout=30)
    env = os.environ | {"BENCH_HW_JOURNAL": str(journal)}
    done = subprocess.run(
        [sys.executable, "bench.py", "hw", "restore"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "restored 13 hardware settings" in done.stdout + done.stderr
    assert state(root) == before
