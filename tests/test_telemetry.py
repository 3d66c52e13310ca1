"""What the machine did during the measured steps: CPU time others took on the trial's cores, steal, the effective
frequency at the window's edges, and a parent that stays off the trial's cores and wakes once per check."""

import math
import os
import threading
import time
from pathlib import Path

import pytest

from hwctl.telemetry import (
    CONTENTION_METHOD,
    FREQ_METHOD,
    USER_HZ,
    CpuContention,
    EnergyCounter,
    FrequencyProbe,
    Probes,
    own_cpu_ticks,
)
from tests.simsysfs import make_cpufreq_tree, make_rapl
from trainables.config import build_config
from trainables.launcher import run_trial
from trainables.worker_watch import _off_the_trials_cpus

ALLOWED = sorted(os.sched_getaffinity(0))
# user nice system idle iowait irq softirq steal guest guest_nice, in clock ticks
IDLE_CPU = [100, 0, 50, 1000, 0, 0, 0, 0, 0, 0]


def write_proc(root: Path, cpus: dict[int, list[int]], utime: int, stime: int) -> Path:
    """A simulated /proc: stat with one line per CPU, and self/stat of a process with a troublesome name."""
    total = [sum(column) for column in zip(*cpus.values(), strict=True)]
    lines = ["cpu  " + " ".join(map(str, total))]
    lines += [f"cpu{cpu} " + " ".join(map(str, values)) for cpu, values in sorted(cpus.items())]
    lines += ["intr 12345 0 0", "ctxt 999", "btime 1700000000"]
    (root / "self").mkdir(parents=True, exist_ok=True)
    (root / "stat").write_text("\n".join(lines) + "\n")
    # comm may hold spaces and parentheses: fields are counted from the last ')'
    fields = ["S", "1", "42", "42", "0", "-1", "4194304", "100", "0", "0", "0", str(utime), str(stime), "0", "0"]
    (root / "self/stat").write_text(f"4242 (python (a b)) {' '.join(fields)} 20 0 3 0 100 0\n")
    return root


def plus(values: list[int], **ticks: int) -> list[int]:
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest", "guest_nice")
    return [v + ticks.get(name, 0) for name, v in zip(names, values, strict=True)]


def test_foreign_cpu_time_is_busy_time_of_the_trials_cpus_minus_the_workers_own(tmp_path):
    root = write_proc(tmp_path, {0: IDLE_CPU, 1: IDLE_CPU, 2: IDLE_CPU}, utime=500, stime=20)
    probe = CpuContention([0, 1], root)
    probe.start()
    write_proc(
        tmp_path,
        {
            # guest time is already inside user: 40 guest ticks must not be counted twice
            0: plus(IDLE_CPU, user=300, system=50, irq=5, softirq=5, steal=20, idle=7, iowait=3, guest=40),
            1: plus(IDLE_CPU, user=100, nice=10, steal=4, idle=200),
            2: plus(IDLE_CPU, user=1000),  # not the trial's CPU: whatever runs there is not counted
        },
        utime=500 + 200,
        stime=20 + 40,
    )
    result = probe.stop()
    busy = 300 + 50 + 5 + 5 + 100 + 10
    assert result == {
        "foreign_cpu_s": pytest.approx((busy - 240) / USER_HZ),
        "steal_s": pytest.approx(24 / USER_HZ),
        "worker_cpu_s": pytest.approx(240 / USER_HZ),
        "contention_method": CONTENTION_METHOD,
    }


def test_foreign_cpu_time_is_never_negative_and_a_missing_source_is_said(tmp_path):
    root = write_proc(tmp_path, {0: IDLE_CPU}, utime=0, stime=0)
    probe = CpuContention([0], root)
    probe.start()
    write_proc(tmp_path, {0: plus(IDLE_CPU, user=99)}, utime=100, stime=0)  # the CPU's tick ran one short
    assert probe.stop()["foreign_cpu_s"] == 0.0

    missing = CpuContention([5], root)
    missing.start()
    assert missing.stop() == {
        "foreign_cpu_s": None,
        "steal_s": None,
        "worker_cpu_s": None,
        "contention_method": f"unavailable: no cpu5 line in {root}/stat",
    }
    nothing = CpuContention([0], tmp_path / "none")
    nothing.start()
    assert nothing.stop()["contention_method"].startswith("unavailable: [Errno 2] No such file or directory")


def test_own_cpu_time_is_read_after_the_process_name(tmp_path):
    assert own_cpu_ticks(write_proc(tmp_path, {0: IDLE_CPU}, utime=123, stime=45)) == 168
    before, spin_until = own_cpu_ticks(), time.process_time() + 0.2
    while time.process_time() < spin_until:
        pass
    assert own_cpu_ticks() - before >= 0.2 * USER_HZ - 1  # the real /proc/self/stat counts this process's CPU time


def test_frequency_is_read_at_the_windows_two_edges(tmp_path):
    root = make_cpufreq_tree(tmp_path / "sys", cpus=3)
    probe = FrequencyProbe([0, 1], root)
    probe.start()
    (root / "devices/system/cpu/cpu1/cpufreq/scaling_cur_freq").write_text("3000000\n")
    (root / "devices/system/cpu/cpu2/cpufreq/scaling_cur_freq").write_text("800000\n")  # not the trial's
    assert probe.stop() == {
        "effective_freq_ghz": pytest.approx((2.4 * 3 + 3.0) / 4),
        "effective_freq_method": FREQ_METHOD,
    }
    nothing = FrequencyProbe([0], tmp_path / "none")
    nothing.start()
    assert nothing.stop()["effective_freq_ghz"] is None


def test_probes_bracket_one_window_and_merge_their_results(tmp_path):
    events = []

    class Recorder:
        def __init__(self, name):
            self.name = name

        def start(self):
            events.append(f"start {self.name}")

        def stop(self):
            events.append(f"stop {self.name}")
            return {f"{self.name}_value": 1}

    probes = Probes([Recorder("outer"), Recorder("inner")])
    probes.start()
    assert probes.stop() == {"outer_value": 1, "inner_value": 1}
    assert events == ["start outer", "start inner", "stop inner", "stop outer"]

    sysfs = make_cpufreq_tree(tmp_path / "sys", cpus=1)
    make_rapl(sysfs, packages=1, energy_uj=1_000_000)
    proc = write_proc(tmp_path / "proc", {0: IDLE_CPU}, utime=0, stime=0)
    together = Probes([EnergyCounter(sysfs), FrequencyProbe([0], sysfs), CpuContention([0], proc)])
    together.start()
    (sysfs / "class/powercap/intel-rapl:0/energy_uj").write_text("3000000\n")
    write_proc(tmp_path / "proc", {0: plus(IDLE_CPU, user=150)}, utime=100, stime=0)
    result = together.stop()
    assert (result["energy_j"], result["effective_freq_ghz"]) == (pytest.approx(2.0), pytest.approx(2.4))
    assert (result["foreign_cpu_s"], result["worker_cpu_s"]) == (pytest.approx(50 / USER_HZ), 100 / USER_HZ)


def test_a_real_trial_records_contention_over_its_measured_steps(tiny, data_dir, tmp_path):
    row = run_trial(build_config(tiny | {"threads": 1}), data_dir=data_dir, output_dir=tmp_path)
    assert row["status"] == "ok", row.get("error")
    assert math.isfinite(row["foreign_cpu_s"]) and row["foreign_cpu_s"] >= 0
    assert math.isfinite(row["steal_s"]) and row["steal_s"] >= 0
    assert row["contention_method"] == CONTENTION_METHOD
    assert row["stop_reason"] == "measure_steps"
    # the worker's own CPU time in the window fits in the window on its one core (a tick of slack each end)
    assert 0 <= row["worker_cpu_s"] <= row["measured_region_s"] * 1.1 + 2 / USER_HZ


# The real worker, with its contention probe wrapped: right after the probe's first reading a busy loop starts,
# pinned to the worker's core, and it is reaped (its CPU time taken from wait4) before the probe's last reading.
NEIGHBOUR_WORKER = """
import os, runpy, subprocess, sys
from hwctl import telemetry

start, stop = telemetry.CpuContention.start, telemetry.CpuContention.stop
BUSY = "import os, sys; os.sched_setaffinity(0, {int(c) for c in sys.argv[1:]})\\nwhile True: pass"

def start_with_neighbour(self):
    start(self)
    self.neighbour = subprocess.Popen([sys.executable, "-c", BUSY, *map(str, self.cpus)])

def stop_with_neighbour(self):
    self.neighbour.kill()
    usage = os.wait4(self.neighbour.pid, 0)[2]
    return stop(self) | {"neighbour_cpu_s": usage.ru_utime + usage.ru_stime}

telemetry.CpuContention.start, telemetry.CpuContention.stop = start_with_neighbour, stop_with_neighbour
runpy.run_module("trainables.worker", run_name="__main__")
"""


def test_a_busy_neighbour_on_the_trials_core_shows_as_foreign_cpu_time(tiny, data_dir, tmp_path):
    cfg = build_config(tiny | {"threads": 1, "measure_steps": 100_000, "measure_seconds": 1.5})
    row = run_trial(cfg, data_dir=data_dir, output_dir=tmp_path, worker_argv=("-c", NEIGHBOUR_WORKER))
    assert row["status"] == "ok", row.get("error")
    assert row["affinity"] == str(ALLOWED[0]) and row["stop_reason"] == "measure_seconds"
    neighbour, foreign = row["neighbour_cpu_s"], row["foreign_cpu_s"]
    assert neighbour > 0.2  # it shared the core with the worker for 1.5 s
    assert foreign >= 0.7 * neighbour - 0.05
    # one core cannot be busier than the window is long: foreign time excludes the worker's own, and other cores
    assert foreign + row["worker_cpu_s"] <= row["measured_region_s"] * 1.1 + 0.1


@pytest.mark.skipif(len(ALLOWED) < 2, reason="needs a CPU the trial does not use")
def test_the_watcher_thread_leaves_the_trials_cpus_and_comes_back():
    seen = {}

    def watch():
        before = os.sched_getaffinity(0)
        with _off_the_trials_cpus([ALLOWED[0]]):
            seen["during"] = os.sched_getaffinity(0)
        with _off_the_trials_cpus(None):  # the worker has every CPU: nowhere else to go
            seen["unconfined"] = os.sched_getaffinity(0)
        seen["after"] = os.sched_getaffinity(0) == before

    thread = threading.Thread(target=watch)
    thread.start()
    thread.join()
    assert seen == {"during": set(ALLOWED[1:]), "unconfined": set(ALLOWED), "after": True}
    assert os.sched_getaffinity(0) == set(ALLOWED)  # per thread: the caller's other threads keep their CPUs


def _voluntary_switches() -> int:
    for line in Path("/proc/thread-self/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches in /proc/thread-self/status")


def test_the_parent_wakes_once_per_check(tiny, data_dir):
    before = _voluntary_switches()
    row = run_trial(build_config(tiny), data_dir=data_dir, worker_argv=("-c", "import time; time.sleep(3)"), poll_s=1.0)
    switches = _voluntary_switches() - before
    assert row["wall_s"] > 3 and row["error"] == "worker exited with code 0 without a result"
    # 3 checks and the spawn's few; Popen.wait(timeout) slept in 50 ms slices: about 40 per second
    assert switches < 15, switches


def test_wait_until_quiet_waits_for_a_quiet_window_and_gives_up_at_its_limit(tmp_path):
    """A simulated /proc/stat whose cpu0 busy ticks grow by a scripted amount per window."""
    from hwctl.telemetry import USER_HZ, wait_until_quiet

    per_window = iter([USER_HZ, USER_HZ // 2, USER_HZ // 20, 0])  # 100%, 50%, 5% busy, then idle
    busy = [0]

    def write():
        (tmp_path / "stat").write_text(f"cpu  0 0 0 0 0 0 0 0\ncpu0 {busy[0]} 0 0 1000 0 0 0 0 0 0\n")

    def tick(_seconds):
        busy[0] += next(per_window)
        write()

    write()
    waited, fraction = wait_until_quiet([0], busy_below=0.10, proc_root=tmp_path, sleep=tick)
    assert (waited, fraction) == (3.0, pytest.approx(0.05, abs=0.01))
    always_busy = lambda _s: (busy.__setitem__(0, busy[0] + USER_HZ), write())  # noqa: E731
    waited, fraction = wait_until_quiet([0], max_wait_s=4, proc_root=tmp_path, sleep=always_busy)
    assert (waited, fraction) == (4.0, 1.0)
