"""The report's roofline section: one PNG per node, and counts of memory- and compute-bound trials."""

from sweep.results.roofline_chart import roofline_section
from trainables.config import build_config
from trainables.flops import flops_per_step
from trainables.traffic import step_traffic


def stored(study, intensity, gflops, peak=100.0, bandwidth=10.0, host="nodeA"):
    """A row of a store that has the roofline columns."""
    roof = min(peak, intensity * bandwidth)
    return {
        "status": "ok",
        "study": study,
        "host": host,
        "threads": 2,
        "peak_dtype": "fp32",
        "peak_gflops": peak,
        "arithmetic_intensity": intensity,
        "roofline_bandwidth_gbs": bandwidth,
        "roofline_gflops": roof,
        "roofline_fraction": gflops / roof,
        "roofline_bound": "compute" if intensity * bandwidth >= peak else "memory",
    }


def test_section_counts_bounds_and_draws_one_png_per_node(tmp_path, tiny):
    cfg = build_config(tiny)
    intensity = flops_per_step(cfg) / step_traffic(cfg).total_bytes  # about 9 FLOP/B
    # an older row without the columns: placed from its config at the node's triad (hw_mem_bw_gbs, 10 GB/s), where
    # the memory roof (~90 GFLOP/s) is under the 100 GFLOP/s peak; it attained 45% of that roof
    step_s = flops_per_step(cfg) / (0.45 * intensity * 10.0) / 1e9
    old = cfg.to_dict() | {
        "status": "ok",
        "study": "width",
        "host": "nodeA",
        "peak_dtype": "fp32",
        "peak_gflops": 100.0,
        "step_time_median_s": step_s,
        "hw_mem_bw_gbs": 10.0,
    }
    rows = [
        stored("width", 2.0, 10.0),  # memory roof 20: memory-bound, fraction 0.5
        stored("width", 50.0, 30.0),  # ridge at 10: compute-bound, fraction 0.3
        stored("depth", 30.0, 80.0),  # compute-bound, fraction 0.8
        old,  # memory-bound, fraction 0.45
        old | {"hw_mem_bw_gbs": None},  # no bandwidth at all: left out
        {"status": "failed", "study": "width", "host": "nodeA"},  # not ok: not a trial on the chart, not counted
        stored("width", 1.0, 5.0, host="nodeB"),  # memory-bound, fraction 0.5
    ]
    text = roofline_section(rows, tmp_path)
    assert text.startswith("## Roofline")
    assert "1 ok trial(s) left out" in text
    assert "**nodeA**: 4 trials, 2 memory-bound and 2 compute-bound; median fraction of the roof 47.5%." in text
    assert "**nodeB**: 1 trials, 1 memory-bound and 0 compute-bound; median fraction of the roof 50.0%." in text
    for node in ("nodeA", "nodeB"):
        png = tmp_path / f"roofline-{node}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        assert f"![roofline {node}]({png.name})" in text


def test_no_placeable_trial_says_so(tmp_path):
    text = roofline_section([{"status": "ok", "study": "x", "step_time_median_s": 1.0}], tmp_path)
    assert (
        text == "## Roofline\n\nNo ok trial could be placed on a roofline. 1 ok trial(s) left out: no peak, step "
        "time or bandwidth to place them by."
    )
    assert list(tmp_path.iterdir()) == []
