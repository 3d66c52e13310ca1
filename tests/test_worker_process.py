"""The worker runs in its own process with the threads, affinity and allocator the config asks for."""

import json
import os

import pytest
from safetensors.torch import load_file

from hwctl.allocator import find_allocator
from trainables.config import build_config
from trainables.flops import flops_per_step
from trainables.launcher import run_trial

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
    assert row["achieved_gflops"] == pytest.approx(row["flops_per_step"] / median / 1e9)
    assert row["mfu"] == pytest.approx(row["achieved_gflops"] / row["peak_gflops_fp32"])
    assert 0 < row["mfu"] < 1.5
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
