"""Measured peaks on this machine: plausible figures, and the cache keyed by host + fingerprint id and the measuring
process's conditions (a hit returns the stored figure; another fingerprint id, other conditions or a refresh measure
again); which library runs a matmul."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest
import torch

from hwctl import microbench
from hwctl.cores import format_cpu_list
from hwctl.fingerprint import hardware_fingerprint, host_fingerprint
from hwctl.fingerprint_text import format_fingerprint, format_host_peaks
from hwctl.isa import cpu_flags
from hwctl.microbench import (
    CACHE_FILE,
    bf16_unsupported_reason,
    libraries_in,
    matmul_library,
    matmul_peak_gflops,
    measure_host_peaks,
    measure_memory_bandwidth_gbs,
    measuring_conditions,
    probe_matmul_library,
    refresh_peaks,
    torch_conditions,
    triad_array_bytes,
)

THREADS = sorted({1, len(os.sched_getaffinity(0))})


def test_triad_bandwidth_is_plausible():
    array_bytes = triad_array_bytes()
    assert array_bytes >= 64 * 2**20
    gbs = measure_memory_bandwidth_gbs(1, array_bytes)
    assert 0.5 < gbs < 2000


def test_bf16_only_where_the_cpu_has_it():
    assert bf16_unsupported_reason("avx2,fma,avx512f,avx512_bf16") is None
    assert bf16_unsupported_reason("avx2,fma,amx_tile,amx_bf16") is None
    assert bf16_unsupported_reason("avx2,fma,avx_vnni,avx_ne_convert") is None  # Sierra Forest, Arrow Lake
    assert bf16_unsupported_reason("avx2,fma,avx512f") == (
        "unsupported: the CPU has none of avx512_bf16, amx_bf16, avx_ne_convert (cpuinfo flags)"
    )


def test_matmul_peak_is_cached_per_fingerprint(tmp_path):
    first = matmul_peak_gflops(1, tmp_path)
    assert first["peak_gflops"] > 1 and first["peak_cached"] is False
    assert first["peak_method"].startswith("best GFLOP/s of torch.mm float32")
    second = matmul_peak_gflops(1, tmp_path)
    assert second == first | {"peak_cached": True}

    cache = json.loads((tmp_path / CACHE_FILE).read_text())
    own = f"{socket.gethostname()}|{host_fingerprint()['hw_fingerprint_id']}"
    assert list(cache) == [own]
    (entry,) = cache[own]["peaks"].values()
    assert entry["value"] == first["peak_gflops"] and entry["method"] == first["peak_method"]

    # a changed fingerprint (another governor, kernel, torch...) must not reuse the old figure
    other = matmul_peak_gflops(1, tmp_path, fingerprint_id="000000000000")
    assert other["peak_cached"] is False and other["peak_gflops"] > 1
    cache = json.loads((tmp_path / CACHE_FILE).read_text())
    assert sorted(cache) == sorted([own, f"{socket.gethostname()}|000000000000"])
    assert matmul_peak_gflops(1, tmp_path)["peak_cached"] is True  # the old section is still there
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CACHE_FILE, f".{CACHE_FILE}.lock"])  # no temp left


def test_host_peaks_for_each_thread_count(tmp_path):
    peaks = measure_host_peaks(THREADS, tmp_path, fingerprint_id="feedfeedfeed")
    assert [row["threads"] for row in peaks["peaks"]] == THREADS
    bf16_reason = bf16_unsupported_reason(",".join(cpu_flags()))
    for row in peaks["peaks"]:
        assert row["fp32_gflops"] > 1 and 0.5 < row["triad_gbs"] < 2000
        assert "torch.add(b, c, alpha=s, out=a)" in row["triad_method"]
        if bf16_reason:
            assert row["bf16_gflops"] is None and row["bf16_method"] == bf16_reason
        else:
            assert row["bf16_gflops"] > 1 and "bfloat16" in row["bf16_method"]
        assert not (row["fp32_cached"] or row["triad_cached"])
    # what the worker asks for afterwards is the figure just measured
    worker = matmul_peak_gflops(THREADS[0], tmp_path, fingerprint_id="feedfeedfeed")
    assert worker["peak_cached"] and worker["peak_gflops"] == peaks["peaks"][0]["fp32_gflops"]
    again = measure_host_peaks(THREADS, tmp_path, fingerprint_id="feedfeedfeed")
    assert all(row["fp32_cached"] and row["triad_cached"] for row in again["peaks"])
    assert [r["triad_gbs"] for r in again["peaks"]] == [r["triad_gbs"] for r in peaks["peaks"]]
    text = format_host_peaks(again)
    assert "fingerprint feedfeedfeed" in text and "(cached)" in text
    # `bench.py hw --peaks` hangs the peaks on the fingerprint and prints both
    fingerprint = hardware_fingerprint() | {"peaks": again}
    assert format_fingerprint(fingerprint).endswith(text)


def test_more_threads_than_allowed_cpus_is_an_error(tmp_path):
    allowed = len(os.sched_getaffinity(0))
    with pytest.raises(ValueError, match=f"thread_counts=\\[{allowed + 1}\\]: this process may use 1..{allowed} CPUs"):
        measure_host_peaks([allowed + 1], tmp_path)
    assert not (tmp_path / CACHE_FILE).exists()


def test_isa_cap_variables_key_their_own_entry(tmp_path, monkeypatch):
    plain = matmul_peak_gflops(1, tmp_path, fingerprint_id="cafecafecafe")
    # oneDNN reads the variable once per process, so the figure here is not capped: what is tested
    # is that a worker started with the cap never reuses the uncapped entry
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    capped = matmul_peak_gflops(1, tmp_path, fingerprint_id="cafecafecafe")
    assert plain["peak_cached"] is False and capped["peak_cached"] is False
    keys = json.loads((tmp_path / CACHE_FILE).read_text())[f"{socket.gethostname()}|cafecafecafe"]["peaks"]
    assert sorted(k.endswith("|ONEDNN_MAX_CPU_ISA=AVX2") for k in keys) == [False, True]


@pytest.fixture
def fake_measurement(monkeypatch) -> list:
    """measure_matmul_peak_gflops replaced by a counter: the cache logic without seconds of matmuls."""
    calls = []

    def measure(dtype_name="float32", threads=None):
        calls.append((dtype_name, threads))
        return 100.0 + len(calls)

    monkeypatch.setattr(microbench, "measure_matmul_peak_gflops", measure)
    return calls


def test_refresh_makes_the_cached_peaks_stale(tmp_path, fake_measurement):
    first = matmul_peak_gflops(1, tmp_path, fingerprint_id="beefbeefbeef")
    assert (first["peak_gflops"], first["peak_cached"]) == (101.0, False)
    assert matmul_peak_gflops(1, tmp_path, fingerprint_id="beefbeefbeef")["peak_gflops"] == 101.0
    # a new sweep: every figure of this host and fingerprint is measured again, once
    stamp = refresh_peaks(tmp_path, fingerprint_id="beefbeefbeef")
    again = matmul_peak_gflops(1, tmp_path, fingerprint_id="beefbeefbeef")
    assert (again["peak_gflops"], again["peak_cached"]) == (102.0, False)
    assert matmul_peak_gflops(1, tmp_path, fingerprint_id="beefbeefbeef") == again | {"peak_cached": True}
    assert fake_measurement == [("float32", 1), ("float32", 1)]
    section = json.loads((tmp_path / CACHE_FILE).read_text())[f"{socket.gethostname()}|beefbeefbeef"]
    (entry,) = section["peaks"].values()
    assert section["refreshed_at"] == stamp <= entry["measured_at"]


def test_the_trials_conditions_key_their_own_entries(tmp_path, fake_measurement, monkeypatch):
    for name in ("OMP_PLACES", "OMP_PROC_BIND", "LD_PRELOAD", *microbench.ISA_CAP_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    cpus = ",".join(map(str, sorted(os.sched_getaffinity(0))))
    capability = torch.backends.cpu.get_cpu_capability()
    assert measuring_conditions(torch_conditions()) == f"cpus={cpus}|bind=none|allocator=glibc|capability={capability}"
    matmul_peak_gflops(2, tmp_path, fingerprint_id="f00df00df00d")
    # what the launcher sets for a pinned trial with jemalloc (trainables/launcher.py build_worker_env)
    monkeypatch.setenv("OMP_PLACES", "{1},{0}")
    monkeypatch.setenv("OMP_PROC_BIND", "spread")
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    assert (
        measuring_conditions(torch_conditions())
        == f"places={{1}},{{0}}|bind=spread|allocator=libjemalloc.so.2|capability={capability}"
    )
    pinned = matmul_peak_gflops(2, tmp_path, fingerprint_id="f00df00df00d")
    assert (pinned["peak_gflops"], pinned["peak_cached"]) == (102.0, False)  # not the unpinned figure
    monkeypatch.setenv("OMP_PLACES", "{0},{1}")  # compact order: another entry again
    assert matmul_peak_gflops(2, tmp_path, fingerprint_id="f00df00df00d")["peak_gflops"] == 103.0
    keys = json.loads((tmp_path / CACHE_FILE).read_text())[f"{socket.gethostname()}|f00df00df00d"]["peaks"]
    jemalloc = f"bind=spread|allocator=libjemalloc.so.2|capability={capability}"
    assert sorted(keys) == sorted(
        [
            f"matmul|float32|threads=2|cpus={cpus}|bind=none|allocator=glibc|capability={capability}",
            f"matmul|float32|threads=2|places={{1}},{{0}}|{jemalloc}",
            f"matmul|float32|threads=2|places={{0}},{{1}}|{jemalloc}",
        ]
    )


def test_library_names_come_from_the_verbose_lines():
    lines = [
        "MKL_VERBOSE oneMKL 2024.0 Update 2 Product build 20240605 for Intel(R) 64 architecture",
        "MKL_VERBOSE SGEMM(T,N,512,64,256,0x7ffc,0x562f,256,0x562f,256,0x7ffc,0x562f,512) 13.79ms CNR:OFF NThr:2",
        "onednn_verbose,v1,info,cpu,isa:Intel AVX-512 with Intel DL Boost and bfloat16 support",
        "onednn_verbose,v1,primitive,exec,cpu,matmul,brg_matmul:avx512_core_bf16,undef,src:bf16::blocked:ab::f0,,"
        "64x256:256x512,0.12793",
        "onednn_verbose,v1,primitive,exec,cpu,matmul,brg_matmul:avx512_core_bf16,undef,src:bf16,,512x64:64x256,0.1",
    ]
    assert libraries_in(lines[:2]) == ["mkl (SGEMM)"]
    assert libraries_in(lines[2:]) == ["onednn (brg_matmul:avx512_core_bf16)"]
    assert libraries_in(lines) == ["mkl (SGEMM)", "onednn (brg_matmul:avx512_core_bf16)"]
    assert libraries_in(["something else", "onednn_verbose,v1,info,gpu,runtime:none"]) == []


@pytest.mark.skipif(not torch.backends.mkl.is_available(), reason="torch is not built with MKL")
def test_fp32_linear_runs_in_mkl_and_stdout_is_left_alone(capfd):
    print("before", flush=True)
    assert probe_matmul_library("float32", 64, 128, 256) == "mkl (SGEMM)"
    print("after", flush=True)
    assert capfd.readouterr().out == "before\nafter\n"  # the verbose lines went to the probe, not to stdout
    bf16 = probe_matmul_library("bfloat16", 64, 128, 256)
    # native bf16: oneDNN's bf16 kernels; without it oneDNN emulates (gemm:jit:bf16) or ATen's own kernel runs it
    assert bf16.startswith("onednn (") or bf16 == "aten"


def test_the_library_is_probed_once_per_conditions_and_shape(tmp_path, monkeypatch):
    probed = []
    monkeypatch.setattr(microbench, "probe_matmul_library", lambda *args: probed.append(args) or "onednn (x)")
    for shape in [(256, 256, 1024), (256, 256, 1024), (512, 256, 1024)]:
        assert matmul_library("bfloat16", shape, 2, tmp_path, fingerprint_id="abcabcabcabc") == "onednn (x)"
    assert probed == [("bfloat16", 256, 256, 1024), ("bfloat16", 512, 256, 1024)]
    refresh_peaks(tmp_path, fingerprint_id="abcabcabcabc")
    matmul_library("bfloat16", (256, 256, 1024), 2, tmp_path, fingerprint_id="abcabcabcabc")
    assert len(probed) == 3


# ---- a peak measured while others use its CPUs is measured again --------------------------------
CPUS = sorted(os.sched_getaffinity(0))  # what process_cpus gives where the simulated /proc has no self/task
RULE = "(again, up to 3, while other processes took over 5% of its threads' CPU time beyond its spare CPUs)"


def write_fake_proc(root, foreign_ticks: int):
    """A simulated /proc: each CPU busy for `foreign_ticks` user ticks more than idle; this process used none."""
    (root / "self").mkdir(parents=True, exist_ok=True)
    lines = [f"cpu{cpu} {100 + foreign_ticks} 0 50 1000 0 0 0 0 0 0" for cpu in CPUS]
    (root / "stat").write_text("cpu  0 0 0 0 0 0 0 0 0 0\n" + "\n".join(lines) + "\n")
    fields = ["S"] + ["0"] * 10 + ["300", "20", "0", "0"]  # utime 300, stime 20 ticks, unchanged
    (root / "self/stat").write_text(f"4242 (python) {' '.join(fields)}\n")


@pytest.fixture
def scripted_peak(tmp_path, monkeypatch):
    """measure_matmul_peak_gflops replaced by a script of (GFLOP/s, foreign CPU ticks on each CPU during that try,
    seconds it lasts): each call moves the simulated /proc on as a neighbour would."""
    proc, script, calls, total = tmp_path / "proc", [], [], [0]
    write_fake_proc(proc, 0)

    def measure(dtype_name="float32", threads=None):
        gflops, foreign, seconds = script[len(calls) % len(script)]
        calls.append(gflops)
        time.sleep(seconds)
        total[0] += foreign  # /proc/stat counts up
        write_fake_proc(proc, total[0])
        return gflops

    monkeypatch.setattr(microbench, "measure_matmul_peak_gflops", measure)
    return proc, script, calls


def test_a_disturbed_peak_is_measured_again_and_the_quiet_one_cached(tmp_path, scripted_peak):
    proc, script, calls = scripted_peak
    script += [(80.0, 500, 0), (100.0, 0, 0)]  # a neighbour ran 5 s on each CPU during the first try
    peak = matmul_peak_gflops(1, tmp_path, fingerprint_id="0badc0ffee00", proc_root=proc)
    assert calls == [80.0, 100.0] and (peak["peak_gflops"], peak["peak_cached"]) == (100.0, False)
    assert peak["peak_method"] == microbench.matmul_method("float32") + (
        f"; 2 tries {RULE}; kept one with foreign CPU 0.0% (of the time of cpus {format_cpu_list(CPUS)})"
    )
    again = matmul_peak_gflops(1, tmp_path, fingerprint_id="0badc0ffee00", proc_root=proc)
    assert again == peak | {"peak_cached": True} and len(calls) == 2  # cached, with the method of its tries


def test_a_peak_disturbed_on_every_try_keeps_the_best_and_is_not_cached(tmp_path, scripted_peak):
    proc, script, calls = scripted_peak
    script += [(90.0, 500, 0), (110.0, 500, 0), (100.0, 500, 0)]
    peak = matmul_peak_gflops(1, tmp_path, fingerprint_id="0badc0ffee01", proc_root=proc)
    assert calls == [90.0, 110.0, 100.0] and (peak["peak_gflops"], peak["peak_cached"]) == (110.0, False)
    tries, kept = peak["peak_method"].split("; 3 tries ")[1].split("; kept one with foreign CPU ")
    assert tries == RULE and kept.endswith(
        f"% (of the time of cpus {format_cpu_list(CPUS)}); disturbed on every try: not cached"
    )
    assert float(kept.split("%")[0]) > 5
    assert not (tmp_path / CACHE_FILE).exists()
    matmul_peak_gflops(1, tmp_path, fingerprint_id="0badc0ffee01", proc_root=proc)
    assert len(calls) == 6  # a later trial measures again


@pytest.mark.skipif(len(CPUS) < 2, reason="needs a CPU the measurement has no thread for")
def test_a_neighbour_on_a_spare_cpu_does_not_disturb_a_one_thread_peak(tmp_path, scripted_peak):
    proc, script, calls = scripted_peak
    script += [(100.0, 10, 0.3)]  # 0.1 s on each CPU in 0.3 s: less than the spare CPUs' idle time
    one = matmul_peak_gflops(1, tmp_path, fingerprint_id="0badc0ffee03", proc_root=proc)
    assert "; 1 try " in one["peak_method"] and len(calls) == 1
    # on every CPU of the mask it takes 0.1 s of the 0.3 s those threads needed: 33%, well over 5%
    every = matmul_peak_gflops(len(CPUS), tmp_path, fingerprint_id="0badc0ffee03", proc_root=proc)
    assert "; 3 tries " in every["peak_method"] and len(calls) == 4 and not every["peak_cached"]


def test_without_a_readable_proc_the_peak_is_measured_once_as_before(tmp_path, fake_measurement):
    no_proc = tmp_path / "no-proc"
    peak = matmul_peak_gflops(1, tmp_path, fingerprint_id="0badc0ffee02", proc_root=no_proc)
    assert peak == {"peak_gflops": 101.0, "peak_cached": False, "peak_method": microbench.matmul_method("float32")}
    again = matmul_peak_gflops(1, tmp_path, fingerprint_id="0badc0ffee02", proc_root=no_proc)
    assert again == peak | {"peak_cached": True}
    assert fake_measurement == [("float32", 1)]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs to bind OpenMP threads apart")
def test_the_watched_cpus_are_every_threads_not_the_main_threads_place():
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    first, second = sorted(os.sched_getaffinity(0))[:2]
    code = "import os, torch; from hwctl.microbench import process_cpus; torch.set_num_threads(2); "
    code += (
        "torch.mm(torch.ones(256, 256), torch.ones(256, 256)); print(sorted(os.sched_getaffinity(0)), process_cpus())"
    )
    env = os.environ | {"OMP_PLACES": f"{{{second}}},{{{first}}}", "OMP_PROC_BIND": "spread", "OMP_NUM_THREADS": "2"}
    run = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO_ROOT, capture_output=True, text=True)
    assert run.stdout.strip() == f"[{second}] [{first}, {second}]", run.stderr  # the main thread sees one place


def _store_entries(cache_dir: str, first: int, count: int) -> None:
    from hwctl.peak_cache import store_entry

    for key in range(first, first + count):
        store_entry(cache_dir, "fp", f"k{key}", float(key), "test", "2026-01-01T00:00:00")


def test_writers_in_several_processes_lose_no_entry(tmp_path):
    # each store is a read-modify-write of the whole file: without the lock, processes overwrite each other's entries
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_store_entries, args=(str(tmp_path), 50 * i, 50)) for i in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
    assert [writer.exitcode for writer in writers] == [0, 0, 0, 0]
    (section,) = json.loads((tmp_path / CACHE_FILE).read_text()).values()
    assert sorted(section["peaks"]) == sorted(f"k{key}" for key in range(200))
    assert section["peaks"]["k137"]["value"] == 137.0
