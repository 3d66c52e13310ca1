"""Measured peaks on this machine: plausible figures, and the cache keyed by host + fingerprint id
(a hit returns the stored figure, another fingerprint id measures again)."""

from __future__ import annotations

import json
import os
import socket

import pytest

from hwctl.fingerprint import hardware_fingerprint, host_fingerprint
from hwctl.fingerprint_text import format_fingerprint
from hwctl.microbench import (
    CACHE_FILE,
    bf16_unsupported_reason,
    format_host_peaks,
    matmul_peak_gflops,
    measure_host_peaks,
    measure_memory_bandwidth_gbs,
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
    assert bf16_unsupported_reason("avx2,fma,avx512f").startswith("unsupported: the CPU has none of avx512_bf16")


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
    bf16_reason = bf16_unsupported_reason(host_fingerprint()["hw_isa"])
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
