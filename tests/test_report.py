"""The sweep report on a small real store: every study plotted and named, fits, projections, noisy and failed rows."""

import pytest

from sweep.results.report import duration, write_report
from sweep.results.store import EmptyStore, Store

SWEEP = "s-new"


def ok_row(study: str, index: int, point: dict, median: float, *, phase="grid", cv=0.02, **extra) -> dict:
    """An ok row as the runner writes it: identity, plan bookkeeping and the metric columns."""
    return {
        "sweep": SWEEP,
        "host": "node-a",
        "plan": "quick",
        "study": study,
        "config_key": f"{study}{index}",
        "point": point,
        "phase": phase,
        "status": "ok",
        "error": None,
        "trial_index": index,
        "recorded_at": f"2025-01-02T10:00:{index:02d}.000+00:00",
        "hw_cpu_model": "Test CPU 9000",
        "step_time_median_s": median,
        "step_time_mean_s": median * 1.01,
        "step_time_std_s": median * cv,
        "step_time_min_s": median * 0.9,
        "step_time_max_s": median * 1.2,
        "step_time_cv": cv,
        "tokens_per_s": 256 / median,
        "forward_s": median * 0.3,
        "forward_std_s": median * 0.01,
        "backward_s": median * 0.6,
        "backward_std_s": median * 0.02,
        "optimizer_s": median * 0.1,
        "optimizer_std_s": median * 0.005,
        "loadavg_before": 0.1,
        "loadavg_after": 0.2,
        "projected_10k_steps_s": median * 10_000,
    } | extra


def bad_row(study: str, index: int, point: dict, status: str, error: str) -> dict:
    """What a failed/timeout/unsupported trial leaves: no metric columns at all."""
    return {
        "sweep": SWEEP,
        "host": "node-a",
        "plan": "quick",
        "study": study,
        "config_key": f"{study}{index}",
        "point": point,
        "phase": "grid",
        "status": status,
        "error": error,
        "trial_index": index,
        "recorded_at": f"2025-01-02T10:01:{index:02d}.000+00:00",
    }


def width_time(width: int) -> float:
    """Step time proportional to width up to 512, then to width squared: a knee at 512, slopes 1 and 2."""
    return 0.05 * width / 128 if width <= 512 else 0.2 * (width / 512) ** 2


@pytest.fixture
def store(tmp_path) -> Store:
    store = Store(tmp_path)
    widths = [128, 256, 512, 1024, 2048]
    for i, w in enumerate(widths):
        noisy = (
            {"step_time_cv": 0.12, "step_time_std_s": 0.012, "loadavg_before": 1.9, "loadavg_after": 2.4}
            if w == 256
            else {}
        )
        store.append(ok_row("width", i, {"width": w}, width_time(w), **noisy))
    store.append(ok_row("width", 20, {"width": 768}, width_time(768), phase="refine", bend_score=0.35))
    store.append(bad_row("width", 5, {"width": 4096}, "failed", "worker killed by signal SIGKILL"))
    store.append(ok_row("cores", 6, {"cores": 1}, 1.0))
    store.append(ok_row("cores", 7, {"cores": 2}, 0.6))
    store.append(bad_row("cores", 8, {"cores": 4}, "unsupported", "cores=4 but this node has 2 logical cores"))
    # an older row: no forward/backward split, no projection column
    legacy = ok_row("activation", 9, {"activation": "gelu"}, 0.5)
    for key in ("forward_s", "forward_std_s", "backward_s", "backward_std_s", "projected_10k_steps_s"):
        legacy.pop(key)
    store.append(legacy)
    store.append(ok_row("activation", 10, {"activation": "relu"}, 0.4))
    store.append(ok_row("batch_size", 11, {"batch_size": 1}, 0.3))
    store.append(bad_row("batch_size", 12, {"batch_size": 64}, "timeout", "no result within 300 s"))
    for i, (attention, window) in enumerate([("local", 64), ("local", 128), ("sliding", 64), ("sliding", 128)]):
        median = 0.1 * window / 64 * (1.5 if attention == "sliding" else 1)
        store.append(ok_row("window-x-attention", 13 + i, {"attention": attention, "window": window}, median))
    # an older sweep: the report of sweep None must pick the newer one above
    store.append(ok_row("width", 0, {"width": 128}, 9.0, sweep="s-old", recorded_at="2024-12-31T00:00:00+00:00"))
    return store


def section(text: str, title: str) -> str:
    start = text.index(title)
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def line_with(text: str, needle: str) -> str:
    found = [ln for ln in text.splitlines() if needle in ln]
    assert len(found) == 1, (needle, found)
    return found[0]


def test_report_files_and_contents(store):
    index = write_report(store, None)
    assert index == store.root / "report" / SWEEP / "index.md"
    text = index.read_text()
    assert text.startswith(f"# Sweep `{SWEEP}`")
    assert "- plan: quick" in text and "node-a (Test CPU 9000)" in text
    assert "- trials: 18 (failed 1, ok 15, timeout 1, unsupported 1)" in text
    studies = ["width", "cores", "activation", "batch_size", "window-x-attention"]
    for study in studies:
        assert f"## Study `{study}`" in text and f"![{study}]({study}.png)" in text
    pngs = sorted(p.name for p in index.parent.glob("*.png"))
    assert pngs == sorted(f"{s}.png" for s in studies)
    for name in pngs:
        data = (index.parent / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000

    width = section(text, "## Study `width`")
    assert "**Knee**" in width and "width ≈ 512, slope 1.00 before and 2.00 after" in width
    assert "R² 1.000" in width
    assert "| 768 | refine (bend score 0.35) | ok | 450.0 |" in width  # the refined point sits in value order
    assert line_with(width, "| 256 | grid |").endswith("| 2.00x | 0.50x |  |")  # ratios to width 128
    assert "| 4096 | grid | failed |" in width

    cores = section(text, "## Study `cores`")
    assert "relative to 1 core" in cores
    assert "| 2 | 600.0 | 1.67x | 83% |" in cores
    assert "serial fraction s = 0.200" in cores and "speed-up limit 1/s = 5.00x" in cores

    activation = section(text, "## Study `activation`")
    assert "**Knee**" not in activation and "| gelu | grid | ok | 500.0 |" in activation
    assert "| relu | grid | ok | 400.0 | 360.0–480.0 | 2.0% | 640 | 0.80x | 1.25x |" in activation

    grid = section(text, "## Study `window-x-attention`: attention, window")
    assert "| sliding | 128 | grid | ok | 300.0 |" in grid and "| 3.00x |" in grid

    batch = section(text, "## Study `batch_size`")  # one ok point: a plot and a table, no fit
    assert "**Knee**" not in batch and "| 1 | grid | ok | 300.0 |" in batch


def test_noisy_rows_are_flagged_with_their_load(store):
    text = write_report(store, SWEEP).read_text()
    phases = section(text, "## Forward / backward / optimizer")
    assert "1 of 15 ok rows are flagged noisy (CV > 5%)" in phases
    noisy = line_with(phases, "| width: width=256 |")
    assert noisy.endswith("| 12.0% | noisy | 1.9 → 2.4 |")
    assert "| 30.0 ± 1.0 | 60.0 ± 2.0 | 10.0 ± 0.5 | 101.0 ± 12.0 |" in noisy
    assert line_with(phases, "| width: width=128 |").endswith("| 2.0% |  |  |")
    assert line_with(phases, "| activation: activation=gelu |").startswith("| activation: activation=gelu |  |  | 50.0")
    order = [ln.split(" |")[0] for ln in phases.splitlines() if ln.startswith("| width: ")]
    assert order == [f"| width: width={w}" for w in (128, 256, 512, 768, 1024, 2048)]  # as in the study section
    # a higher threshold flags nothing
    assert "0 of 15 ok rows are flagged noisy (CV > 20%)" in write_report(store, SWEEP, noisy_cv=0.2).read_text()


def test_projections_and_token_budget(store, tmp_path):
    index = write_report(store, SWEEP, out_dir=tmp_path / "elsewhere", tokens=1e9)
    assert index == tmp_path / "elsewhere" / "index.md"
    projections = section(index.read_text(), "## Projections")
    assert "steady-state median step time" in projections and "data loading" in projections
    assert "| config | median step s | 10,000 steps | tokens/s | time for 1,000,000,000 tokens |" in projections
    # gelu lacks projected_10k_steps_s: 10,000 x 0.5 s; 1e9 tokens at 512 tokens/s
    gelu = line_with(projections, "| activation: activation=gelu |")
    assert gelu == "| activation: activation=gelu | 0.5 | 5000 s (1 h 23 m) | 512 | 1953125 s (22 d 14 h) |"
    assert "| cores: cores=1 | 1 | 10000 s (2 h 46 m) |" in projections
    assert "cores=4" not in projections and "width=4096" not in projections


def test_failed_timeout_unsupported_are_listed_with_reasons(store):
    text = write_report(store, SWEEP).read_text()
    failures = section(text, "## Trials that did not finish ok (3)")
    assert "| failed | width | width=4096 | worker killed by signal SIGKILL |" in failures
    assert "| unsupported | cores | cores=4 | cores=4 but this node has 2 logical cores |" in failures
    assert "| timeout | batch_size | batch_size=64 | no result within 300 s |" in failures


def test_unknown_sweep_and_durations(store, tmp_path):
    with pytest.raises(EmptyStore, match="'nope'"):
        write_report(store, "nope")
    with pytest.raises(EmptyStore):
        write_report(Store(tmp_path / "empty"), None)
    assert [duration(s) for s in (4.25, 42, 200, 5000, 200_000)] == [
        "4.25 s",
        "42 s",
        "3 m 20 s",
        "1 h 23 m",
        "2 d 7 h",
    ]


def test_sparse_and_odd_rows_still_report(tmp_path):
    """Rows of older versions: no point, NaN metrics, no tokens/s; a study whose only trial failed."""
    store = Store(tmp_path)
    nan = float("nan")
    store.append(bad_row("seq_len", 0, {"seq_len": 4096}, "failed", "out of memory | cap 8 GB\nworker exited"))
    baseline = ok_row("baseline", 1, {}, 0.25, step_time_cv=nan, step_time_min_s=nan, tokens_per_s=None)
    store.append(baseline | {"point": None})
    store.append(ok_row("width", 2, {"width": 64}, 0.1, recorded_at=None, trial_index=None))
    index = write_report(store, SWEEP, tokens=1e6)
    text = index.read_text()
    assert sorted(p.name for p in index.parent.glob("*.png")) == ["baseline.png", "seq_len.png", "width.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in index.parent.glob("*.png"))
    # the reason keeps its words; its pipe and newline cannot break the table
    assert "| failed | seq_len | seq_len=4096 | out of memory \\| cap 8 GB worker exited |" in text
    assert "| baseline | grid | ok | 250.0 |  |  |  | 1.00x |  |  |" in text
    assert "| baseline: baseline | 0.25 | 2500 s (41 m 40 s) |  |  |" in text
    assert "**Knee**" not in text and "| 64 | grid | ok | 100.0 |" in text


def test_an_axis_with_zero_gets_a_line_not_a_knee(tmp_path):
    # dropout 0.0 has no logarithm: two positive values are left, too few for a knee (a real quick-plan case)
    s = Store(tmp_path)
    for i, (p, t) in enumerate([(0.0, 0.080), (0.1, 0.103), (0.2, 0.121)]):
        s.append(ok_row("dropout", i, {"dropout": p}, t))
    index = write_report(s, None).read_text()
    assert "**Fit** over the positive dropout values: slope 0.23 in log-log" in index
    assert "**Knee**" not in index


NODES = {  # two nodes share a hostname; step times scale by node (the knee stays at width 512)
    "10.0.0.1": ("node-a", 1.0, "Xeon 8480+"),
    "10.0.0.2": ("node-a", 0.5, "EPYC 9654"),
    "10.0.0.3": ("node-b", 2.0, "Core i5-6500"),
}


def multi_node_store(tmp_path) -> Store:
    store = Store(tmp_path)
    for ip, (host, factor, cpu) in NODES.items():
        node = {"host": host, "node": ip, "hw_cpu_model": cpu}
        for i, w in enumerate([128, 256, 512, 1024, 2048]):
            store.append(ok_row("width", i, {"width": w}, width_time(w) * factor, **node))
    store.append(
        bad_row("width", 5, {"width": 4096}, "failed", "worker killed") | {"host": "node-b", "node": "10.0.0.3"}
    )
    # a failure the driver recorded: no IP, but node-b has exactly one, so the row joins node-b's sections
    store.append(bad_row("width", 6, {"width": 8192}, "failed", "Ray trial error") | {"host": "node-b"})
    return store


def test_multi_node_sweep_keeps_nodes_apart(tmp_path):
    index = write_report(multi_node_store(tmp_path), SWEEP)
    text = index.read_text()
    assert "- nodes: node-a (10.0.0.1) (Xeon 8480+); node-a (10.0.0.2) (EPYC 9654); node-b (10.0.0.3) (Core i5" in text
    across = section(text, "## Across nodes")
    assert text.index("## Across nodes") < text.index("## Study")
    assert "Reference: node-a (10.0.0.1) (the most ok rows: 5, first by name of 3 tied)" in across
    # width 256: 100 ms on the reference, 50 ms (2.00x) and 200 ms (0.50x) on the others
    assert "| width | width=256 | 100.0 | 2,560 | 50.0 | 5,120 | 2.00x | 200.0 | 1,280 | 0.50x |" in across
    assert "| ISA" not in across and "| CPU model | Xeon 8480+ | EPYC 9654 | Core i5-6500 |" in across
    assert "![width across nodes](compare-width.png)" in across
    for ip, (host, factor, _) in NODES.items():
        study = section(text, f"## Study `width`: width on {host} ({ip})")  # one curve and fit per node
        assert "width ≈ 512, slope 1.00 before and 2.00 after" in study
        assert f"| 128 | grid | ok | {50 * factor:.1f} |" in study
        assert f"![width on {host} ({ip})](width-{host}_{ip}.png)" in study
    assert "| 8192 | grid | failed |" in section(text, "## Study `width`: width on node-b (10.0.0.3)")
    pngs = sorted(p.name for p in index.parent.glob("*.png"))
    assert pngs == [
        "compare-width.png",
        "width-node-a_10.0.0.1.png",
        "width-node-a_10.0.0.2.png",
        "width-node-b_10.0.0.3.png",
    ]
    assert all((index.parent / p).stat().st_size > 5000 for p in pngs)
    assert "| width: width=128 on node-a (10.0.0.2) |" in section(text, "## Forward / backward / optimizer")
    failures = section(text, "## Trials that did not finish ok (2)")
    assert "| failed | width | node-b (10.0.0.3) | width=4096 | worker killed |" in failures
    assert "| failed | width | node-b (10.0.0.3) | width=8192 | Ray trial error |" in failures


def test_one_node_with_a_driver_failure_stays_a_single_node_report(tmp_path):
    store = Store(tmp_path)
    for i, w in enumerate([128, 256, 512]):
        store.append(ok_row("width", i, {"width": w}, width_time(w), node="10.0.0.1"))
    store.append(bad_row("width", 3, {"width": 4096}, "failed", "Ray trial error"))  # no node column
    text = write_report(store, SWEEP).read_text()
    assert "## Across nodes" not in text and " on node-a" not in text
    assert "- host(s): node-a (Test CPU 9000)" in text and "## Study `width`: width\n" in text
    assert "| failed | width | width=4096 | Ray trial error |" in text
