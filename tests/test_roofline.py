"""Roofline columns: the pure arithmetic of trainables/roofline.py, and the columns a real trial's row carries."""

import pytest

from trainables.config import build_config
from trainables.flops import flops_per_step
from trainables.launcher import run_trial
from trainables.roofline import forward_flops_per_step, roofline_from_row, roofline_values
from trainables.traffic import step_traffic


def test_the_roof_and_the_fraction(tiny):
    cfg = build_config(tiny)
    flops, traffic = flops_per_step(cfg), step_traffic(cfg)
    intensity = flops / traffic.total_bytes
    step_s = flops / 25e9  # 25 GFLOP/s attained
    phases = {"forward": step_s / 4, "backward": step_s / 2, "optimizer": step_s / 4}
    # a bandwidth that puts the memory roof at 50 GFLOP/s, under a 100 GFLOP/s peak: memory-bound, half the roof
    memory = roofline_values(cfg, step_s, phases, peak_gflops=100.0, bandwidth_gbs=50 / intensity)
    assert memory["roofline_bytes"] == traffic.total_bytes
    assert memory["arithmetic_intensity"] == pytest.approx(intensity)
    assert memory["roofline_gflops"] == pytest.approx(50.0)
    assert memory["roofline_fraction"] == pytest.approx(0.5)
    assert memory["roofline_bound"] == "memory"
    # four times the bandwidth: the memory roof at 200, so the 100 GFLOP/s peak binds and 25 is a quarter of it
    compute = roofline_values(cfg, step_s, phases, peak_gflops=100.0, bandwidth_gbs=200 / intensity)
    assert (compute["roofline_gflops"], compute["roofline_bound"]) == (100.0, "compute")
    assert compute["roofline_fraction"] == pytest.approx(0.25)
    # per phase: forward's FLOPs over its own bytes; the optimizer has no matmul FLOPs, so its fraction is the share
    # of the bandwidth its bytes took
    forward = forward_flops_per_step(cfg)
    assert flops / 3.1 < forward < flops / 3  # the flash backward's recompute: a little under a third
    assert memory["forward_arithmetic_intensity"] == pytest.approx(forward / traffic.forward_bytes)
    assert memory["backward_arithmetic_intensity"] == pytest.approx((flops - forward) / traffic.backward_bytes)
    assert memory["optimizer_arithmetic_intensity"] == 0 and memory["optimizer_roofline_bound"] == "memory"
    bandwidth = 50 / intensity
    expected = traffic.optimizer_bytes / (step_s / 4) / 1e9 / bandwidth
    assert memory["optimizer_roofline_fraction"] == pytest.approx(expected)
    # a fused step (jax jit, numpy) times no phases: no phase figures, none guessed
    fused = roofline_values(cfg, step_s, None, 100.0, 1.0)
    assert fused["forward_roofline_fraction"] is None and fused["optimizer_arithmetic_intensity"] is None


def test_forward_flops_are_a_third_of_the_linear_layers(tiny):
    # manual attention: backward 2x forward everywhere, so the forward is exactly a third of the step
    cfg = build_config(tiny | {"attn_backend": "manual"})
    assert forward_flops_per_step(cfg) * 3 == flops_per_step(cfg)


@pytest.mark.parametrize("framework", ["torch", "numpy"])
def test_a_real_trial_row_carries_its_roofline(framework, tiny, data_dir, tmp_path):
    cfg = build_config(tiny | {"framework": framework})
    row = run_trial(cfg, data_dir=data_dir, output_dir=tmp_path)
    assert row["status"] == "ok", row.get("error")
    for column in ("roofline_bytes", "arithmetic_intensity", "roofline_bandwidth_gbs", "roofline_gflops"):
        assert row[column] > 0, column
    assert row["arithmetic_intensity"] == pytest.approx(row["flops_per_step"] / row["roofline_bytes"])
    assert row["roofline_bytes"] == step_traffic(cfg).total_bytes
    assert 0 < row["roofline_fraction"] <= 1.5
    assert row["roofline_bound"] in ("compute", "memory")
    assert row["roofline_gflops"] == pytest.approx(
        min(row["peak_gflops"], row["arithmetic_intensity"] * row["roofline_bandwidth_gbs"])
    )
    assert row["roofline_fraction"] == pytest.approx(row["achieved_gflops"] / row["roofline_gflops"])
    assert "triad" in row["roofline_bandwidth_method"] and row["roofline_s"] >= 0
    if framework == "torch":  # forward, backward and optimizer timed apart
        assert 0 < row["optimizer_roofline_fraction"] and row["optimizer_roofline_bound"] == "memory"
        assert row["forward_arithmetic_intensity"] > 0
    else:  # one fused call per step: no phase split
        assert row["optimizer_roofline_fraction"] is None and row["forward_arithmetic_intensity"] is None
    # a row of an older store, without the columns: the report computes the same figures from its config
    old = {k: v for k, v in row.items() if "roofline" not in k and "intensity" not in k}
    again = roofline_from_row(old, row["roofline_bandwidth_gbs"])
    assert again["roofline_fraction"] == pytest.approx(row["roofline_fraction"])
    assert again["roofline_bytes"] == row["roofline_bytes"]
    assert roofline_from_row({k: v for k, v in old.items() if k != "peak_gflops"}, 10.0) is None
