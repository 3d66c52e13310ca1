"""The worker runs in its own process with the threads, affinity and allocator the config asks for."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from hwctl.allocator import find_allocator
from hwctl.isa import bf16_native_reason
from hwctl.microbench import CACHE_FILE
from trainables.config import build_config
from trainables.flops import flops_method, flops_per_step
from trainables.launcher import REPO_ROOT, run_trial

ALLOWED = sorted(os.sched_getaffinity(0))


def test_one_thread_pinned_compact(tiny, data_dir, tmp_path):
    cfg = build_config(tiny | {"threads": 1, "pinning": "compact"})
    row = run_trial(cfg, data_dir=data_dir, output_dir=tmp_path)
    assert row["status"] == "ok", row.get("error")
    first = str(ALLOWED[0])
    # read back inside the worker: the process mask, every thread's mask, torch's own setting
    assert row["affinity"] == row["affinity_read_back"] == row["thread_affinity"] == first
    assert (row["torch_threads"], row["torch_interop_threads"], row["threads"]) == (1, 1, 1)
    env = json.loads(row["env"])
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1"
    assert env["OMP_PLACES"] == "{" + first + "}" and env["OMP_PROC_BIND"] == "close"
    assert row["allocator_loaded"] == "glibc"


def test_metrics_are_consistent(tiny, data_dir, tmp_path):
    cfg = build_config(tiny)
    row = run_trial(cfg, data_dir=data_dir, output_dir=tmp_path)
    assert row["status"] == "ok", row.get("error")
    median = row["step_time_median_s"]
    assert row["config_key"] == cfg.config_key()
    assert row["flops_per_step"] == flops_per_step(cfg)
    assert row["tokens_per_s"] == pytest.approx(cfg.tokens_per_step / median)
    assert row["flops_method"] == flops_method(cfg) and "SDPA CPU flash kernel" in row["flops_method"]
    assert row["achieved_gflops"] == pytest.approx(row["flops_per_step"] / median / 1e9)
    # fp32: divided by the fp32 peak, measured (or cached) under this trial's conditions
    assert row["peak_dtype"] == "fp32" and row["peak_gflops"] == row["peak_gflops_fp32"] > 1
    assert row["mfu"] == pytest.approx(row["achieved_gflops"] / row["peak_gflops"])
    assert 0 < row["mfu"] < 1.5
    assert row["bf16_native"] is (bf16_native_reason() is None)
    if torch.backends.mkl.is_available():
        assert row["matmul_library"] == "mkl (SGEMM)"
    assert row["projected_10k_steps_s"] == pytest.approx(10_000 * median)
    assert row["params"] == 64 * 512 + 64 * 64 + 2 * (12 * 64 * 64 + 4 * 64) + 2 * 64
    assert row["measure_steps_run"] == 3 and len(row["step_times_s"]) == 3
    assert row["threads"] == len(ALLOWED) and row["torch_threads"] == len(ALLOWED)
    assert 0 < row["startup_s"] < 60 and row["peak_rss_mb"] > 100
    assert row["dataset_source"] == "offline:pydoc_data.topics"
    assert row["wall_s"] > row["timed_region_s"] > row["measured_region_s"] > 0


def test_no_pinning_leaves_affinity_alone(tiny, data_dir, tmp_path):
    row = run_trial(build_config(tiny | {"pinning": "none", "threads": 1}), data_dir=data_dir, output_dir=tmp_path)
    assert row["status"] == "ok", row.get("error")
    assert row["affinity"] is None
    assert row["affinity_read_back"] == ",".join(map(str, ALLOWED))
    assert "OMP_PLACES" not in json.loads(row["env"])


def test_more_threads_than_cores_is_unsupported(tiny, data_dir):
    row = run_trial(build_config(tiny | {"threads": len(ALLOWED) + 1}), data_dir=data_dir)
    assert row["status"] == "unsupported"
    assert f"exceeds the {len(ALLOWED)} cores available" in row["error"]


@pytest.mark.parametrize("allocator", ["jemalloc", "tcmalloc"])
def test_allocator_is_preloaded_or_reported_unsupported(tiny, data_dir, tmp_path, allocator):
    row = run_trial(build_config(tiny | {"allocator": allocator}), data_dir=data_dir, output_dir=tmp_path)
    library = find_allocator(allocator)
    if library is None:
        assert row["status"] == "unsupported" and "not found" in row["error"]
    else:
        assert row["status"] == "ok", row.get("error")
        assert row["allocator_loaded"] == library
        assert json.loads(row["env"])["LD_PRELOAD"] == library


def test_save_model_writes_weights_and_config(tiny, data_dir, tmp_path):
    cfg = build_config(tiny | {"save_model": True})
    row = run_trial(cfg, data_dir=data_dir, output_dir=tmp_path)
    assert row["status"] == "ok", row.get("error")
    folder = tmp_path / cfg.config_key()
    assert row["model_dir"] == str(folder)
    weights = load_file(str(folder / "model.safetensors"))
    assert weights["wte.weight"].shape == (512, 64)
    assert sum(w.numel() for w in weights.values()) == row["params"]
    assert json.loads((folder / "config.json").read_text())["width"] == 64


def test_bf16_rows_divide_by_the_bf16_peak_where_it_is_native(tiny, data_dir, tmp_path, simulated_cpu):
    # the worker inherits BENCH_CPUINFO: it decides from the simulated CPU's flags (torch still runs on the real one)
    row = run_trial(build_config(tiny | {"precision": "bf16"}), data_dir=data_dir, output_dir=tmp_path)
    assert row["status"] == "ok", row.get("error")
    native = simulated_cpu == "zen5-avx512"  # AVX-512 with BF16; zen3 has AVX2 only
    assert row["bf16_native"] is native
    assert row["peak_dtype"] == ("bf16" if native else "fp32")
    assert row["mfu"] == pytest.approx(row["achieved_gflops"] / row["peak_gflops"])
    if native:
        assert "torch.mm bfloat16" in row["peak_method"] and row["peak_gflops"] > 1
    else:
        assert row["peak_gflops"] == row["peak_gflops_fp32"]
        assert row["peak_method"].startswith("fp32 peak, as bf16 is not native here (the CPU has none of")
    # the matmul itself ran on the real CPU: oneDNN, natively or emulated, or ATen's own kernel
    assert row["matmul_library"].startswith("onednn (") or row["matmul_library"] in ("aten", "unknown")


def _snapshot(folder):
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.glob("*"))} if folder.exists() else {}


def test_the_peak_cache_of_a_trial_lives_in_its_data_dir(tiny, data_dir, tmp_path):
    repo_cache = REPO_ROOT / "data" / "hw"
    before = _snapshot(repo_cache)
    row = run_trial(build_config(tiny | {"threads": 1}), data_dir=data_dir, output_dir=tmp_path)
    assert row["status"] == "ok", row.get("error")
    # the figure the row divides by is in the temporary data dir, keyed by the trial's pinned CPU
    sections = json.loads((data_dir / "hw" / CACHE_FILE).read_text()).values()  # one per (simulated) fingerprint
    place = "{" + str(ALLOWED[0]) + "}"
    values = [
        entry["value"]
        for section in sections
        for key, entry in section["peaks"].items()
        if key.startswith(f"matmul|float32|threads=1|places={place}|bind=close|allocator=glibc|")
    ]
    assert row["peak_gflops_fp32"] in values
    assert _snapshot(repo_cache) == before  # the user's data/hw is untouched
