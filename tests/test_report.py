"""The sweep report on a small real store: every study plotted and named, fits, projections, noisy and failed rows."""

import pytest

from sweep.results.report import write_report
from sweep.results.report_tables import duration
from sweep.results.store import EmptyStore, Store
from sweep.results.tables import study_summary

SWEEP = "s-new"
STEP_SHAPE = [0.9, 0.95, 0.98, 1.0, 1.0, 1.02, 1.05, 1.1, 1.2]  # a trial's steps over its median: min 0.9, max 1.2


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
        "step_times_s": [median * f for f in STEP_SHAPE],
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
    for key in ("forward_s", "forward_std_s", "backward_s", "backward_std_s", "projected_10k_steps_s", "step_times_s"):
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

    width = section(text, "## Study `width`")  # six clean points on two slopes: the knee is supported
    assert "**Knee**" in width and "width ≈ 512, slope 1.00 before and 2.00 after" in width
    assert "R² 1.000" in width and "F-test against one line: p < 0.001" in width
    # the refined point sits in value order; one repeat: the interval is its 9 steps' (2nd and 8th of 9: 0.95x, 1.1x)
    assert "| 768 | refine (bend score 0.35) | ok | 450.0 | 427.5–495.0 | 1 | 2.0% | 569 |" in width
    assert "| 128 | grid | ok | 50.0 | 47.5–55.0 | 1 | 2.0% | 5,120 | 1.00x | 1.00x | reference |  |" in width
    assert line_with(width, "| 256 | grid |").endswith(  # ratios to width 128, intervals from both points' steps
        "| 2.00x (1.82–2.20) | 0.50x (0.45–0.55) | slower (1 repeat: steps only) |  |"
    )
    assert "| 4096 | grid | failed |  |" in width

    cores = section(text, "## Study `cores`")  # two core counts: neither a knee nor Amdahl
    assert "relative to 1 core" in cores
    assert "| cores | median step ms | speed-up | 95% CI | parallel efficiency | verdict |" in cores
    assert "| 1 | 1000.0 | 1.00x |  | 100% | reference |" in cores
    assert "| 2 | 600.0 | 1.67x | 1.52–1.80 | 83% | faster (1 repeat: steps only) |" in cores
    assert "**No Amdahl fit** (2 core count(s); T1 and s are 2 parameters" in cores and "serial fraction" not in cores
    assert "**No evidence of a bend** (2 distinct positive values;" in cores

    activation = section(text, "## Study `activation`")  # gelu is an older row without its per-step times
    assert "**Knee**" not in activation and "| gelu | grid | ok | 500.0 |  | 1 |" in activation
    assert "| relu | grid | ok | 400.0 | 380.0–440.0 | 1 | 2.0% | 640 | 0.80x | 1.25x | no interval |  |" in activation

    grid = section(text, "## Study `window-x-attention`: attention, window")
    assert "| sliding | 128 | grid | ok | 300.0 |" in grid and "| 3.00x (2.78–3.22) |" in grid

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
    assert "| baseline | grid | ok | 250.0 | 237.5–275.0 | 1 |  |  | 1.00x |  | reference |  |" in text
    assert "| baseline: baseline | 0.25 | 2500 s (41 m 40 s) |  |  |" in text
    assert "**Knee**" not in text and "| 64 | grid | ok | 100.0 |" in text


def test_an_axis_with_zero_gets_a_line_not_a_knee(tmp_path):
    # dropout 0.0 has no logarithm: two positive values are left, too few for a knee (a real quick-plan case)
    s = Store(tmp_path)
    for i, (p, t) in enumerate([(0.0, 0.080), (0.1, 0.103), (0.2, 0.121)]):
        s.append(ok_row("dropout", i, {"dropout": p}, t))
    index = write_report(s, None).read_text()
    assert "**No evidence of a bend** (2 distinct positive values;" in index
    assert "One straight line in log-log over the positive dropout values: slope 0.23" in index
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


TIGHT = [0.98, 0.99, 1.0, 1.01, 1.02]  # steps within 2% of their trial's median


def repeat_rows(study: str, point: dict, medians: list[float], start: int, shape=STEP_SHAPE, **extra) -> list[dict]:
    """Repeats of one point: the same config_key, repeat 0, 1, ..., recorded a minute apart."""
    key = f"{study}-" + "-".join(f"{k}{v}" for k, v in point.items())
    return [
        ok_row(study, start + i, point, median, config_key=key, repeat=i, **extra)
        | {"recorded_at": f"2025-01-02T11:{start + i:02d}:00.000+00:00", "step_times_s": [median * f for f in shape]}
        for i, median in enumerate(medians)
    ]


def repeats_store(tmp_path) -> Store:
    store = Store(tmp_path)
    # the "relu 1.29x slower than gelu": one row each (0.600 / 0.465) says so, three repeats each say noise
    rows = repeat_rows("activation", {"activation": "gelu"}, [0.50, 0.58, 0.465], start=0)
    rows += repeat_rows("activation", {"activation": "relu"}, [0.60, 0.47, 0.55], start=3)
    rows.append(
        bad_row("activation", 6, {"activation": "relu"}, "failed", "worker killed")
        | {"config_key": rows[-1]["config_key"]}
    )
    # a real 1.5x with little noise
    rows += repeat_rows("width", {"width": 128}, [0.100, 0.102, 0.098], start=10, shape=TIGHT)
    rows += repeat_rows("width", {"width": 256}, [0.150, 0.153, 0.148], start=13, shape=TIGHT)
    for row in rows:
        store.append(row)
    return store


def test_repeats_give_medians_intervals_and_verdicts(tmp_path):
    text = write_report(repeats_store(tmp_path), SWEEP).read_text()
    activation = section(text, "## Study `activation`")
    assert (
        "| activation | phase | status | median ms | 95% CI ms | repeats | CV | tokens/s | step time vs first (95% CI) |"
        in (activation)
    )
    assert "| gelu | grid | ok | 500.0 | 411.4–786.0 | 3 | 2.0% | 512 | 1.00x | 1.00x | reference |  |" in activation
    relu = line_with(activation, "| relu |")  # median of 0.60, 0.47, 0.55; the failed fourth trial is named
    # paired by round: d = ln(.60/.50), ln(.47/.58), ln(.55/.465); mean 0.0467 -> 1.05x; its own variance 0.0496
    # is above the node's pool (0.0248, df 4), so exp(±t(.975, 4) sqrt(0.0496 / 3)) = exp(±0.357)
    assert relu == (
        "| relu | grid | ok 3 of 4 | 550.0 | 360.4–733.0 | 3 | 2.0% | 465 | 1.05x (0.73–1.50) | 0.91x (0.67–1.36) "
        "| no measurable effect | worker killed |"
    )
    width = section(text, "## Study `width`")
    assert (
        # the node's pooled variance (0.0248, the noisy activation ratio's mostly) widens the tight ratio: exp(±0.252)
        "| 256 | grid | ok | 150.0 | 140.8–162.5 | 3 | 2.0% | 1,707 | 1.50x (1.17–1.93) | 0.67x (0.52–0.86) | slower |"
        in (width)
    )
    assert "**No evidence of a bend** (2 distinct positive values" in width
    assert "marked **no measurable effect** has an interval that includes 1.00" in text
    assert "hierarchical bootstrap (2000 resamples, seed 12)" in text
    phases = section(text, "## Forward / backward / optimizer")  # every trial, its repeat named
    assert "| activation: activation=gelu (repeat 2) | 139.5 ± 4.7 |" in phases
    projections = section(text, "## Projections")  # per point, from the median over repeats
    assert "| activation: activation=relu | 0.55 | 5500 s (1 h 31 m) |" in projections
    assert projections.count("activation=relu") == 1
    assert "| failed | activation | activation=relu | worker killed |" in section(
        text, "## Trials that did not finish ok"
    )


def test_terminal_summary_shows_intervals_and_verdicts(tmp_path):
    summary = study_summary(repeats_store(tmp_path), SWEEP)
    lines = {ln.split()[0]: ln.split() for ln in summary.splitlines() if ln.startswith(("activation=", "width="))}
    assert lines["activation=gelu"] == ["activation=gelu", "500.0", "411.4–786.0", "3", "512", "1.00x", "reference"]
    assert lines["activation=relu"][1:6] == ["550.0", "360.4–733.0", "3", "465", "1.05x"]
    assert " ".join(lines["activation=relu"][6:]) == "(0.73–1.50) no measurable effect; worker killed"
    assert lines["width=256"][1:] == ["150.0", "140.8–162.5", "3", "1,707", "1.50x", "(1.17–1.93)", "slower"]
    assert "step ms (median)  95% CI" in summary and "repeats" in summary and "verdict / reason" in summary


def test_three_point_knee_is_not_reported(tmp_path):
    # the "knee" in heads: slopes 0.20 and -0.29 through three points, R² 1.000
    store = Store(tmp_path)
    for i, (heads, median) in enumerate([(2, 0.100), (4, 0.115), (8, 0.094)]):
        store.append(ok_row("heads", i, {"heads": heads}, median))
    heads = section(write_report(store, SWEEP).read_text(), "## Study `heads`")
    assert "**Knee**" not in heads and "R²" not in heads
    assert (
        "**No evidence of a bend** (3 distinct positive values; a two-segment fit in log-log has 4 parameters "
        "(intercept, two slopes, knee) and passes through any 4 points, so it needs at least 5)."
    ) in heads


def test_six_noisy_points_on_one_line_are_no_bend_and_four_cores_get_amdahl(tmp_path):
    store = Store(tmp_path)
    wobble = [1.03, 0.96, 1.05, 0.97, 1.02, 0.98]  # ±5% around slope 1: the best knee is not significant
    for i, (w, f) in enumerate(zip([64, 128, 256, 512, 1024, 2048], wobble, strict=True)):
        store.append(ok_row("width", i, {"width": w}, 0.001 * w * f))
    for i, n in enumerate([1, 2, 4, 8]):
        store.append(ok_row("cores", 10 + i, {"cores": n}, 10 * (0.2 + 0.8 / n)))
    text = write_report(store, SWEEP).read_text()
    width = section(text, "## Study `width`")
    assert (
        "**No evidence of a bend** (two lines fit no better than one: F-test F = " in width and "**Knee**" not in width
    )
    cores = section(text, "## Study `cores`")
    assert "**Amdahl fit** of the medians over repeats: serial fraction s = 0.200" in cores
    assert "speed-up limit 1/s = 5.00x" in cores and "over 4 points" in cores


def control_rows(levels: list[float], shape=TIGHT) -> list[dict]:
    return [
        ok_row("control", 100 + i, {}, 0.2 * level, phase="control", config_key="control", repeat=i)
        | {"recorded_at": f"2025-01-02T1{i}:00:00.000+00:00", "step_times_s": [0.2 * level * f for f in shape]}
        for i, level in enumerate(levels)
    ]


def test_drift_section_from_control_rows(tmp_path):
    store = Store(tmp_path)
    store.append(ok_row("width", 0, {"width": 128}, 0.05))
    for row in reversed(control_rows([1.0, 1.02, 1.1, 1.25])):  # stored out of order: the section sorts by time
        store.append(row)
    text = write_report(store, SWEEP).read_text()
    drift = section(text, "## Drift")
    assert text.index("## Drift") < text.index("## Study `width`") and "## Study `control`" not in text
    assert "Median over 4 repeat(s): 212.0 ms" in drift
    assert "| repeat | recorded | median ms | 95% CI ms (its steps) | vs first |" in drift
    assert "| 0 | 2025-01-02T10:00:00.000+00:00 | 200.0 | 196.0–204.0 | 1.00x |" in drift
    assert "| 3 | 2025-01-02T13:00:00.000+00:00 | 250.0 | 245.0–255.0 | 1.25x |" in drift
    assert "**Drift beyond the noise**: the control's 4 repeats differ by 1.25x (max/min; 95% CI 1.21–1.29x)" in drift
    assert (
        "(p < 0.001: the share of 2000 resamples" in drift
        and "can differ by up to 1.25x without any effect of the axis" in drift
    )
    assert "| control: baseline (repeat 3) |" in section(text, "## Forward / backward / optimizer")


def test_drift_within_the_noise_and_no_control(tmp_path):
    store = Store(tmp_path)
    for row in control_rows([1.0, 1.01, 0.99, 1.0], shape=STEP_SHAPE):  # 1% apart, steps ±10%
        store.append(row)
    drift = section(write_report(store, SWEEP).read_text(), "## Drift")
    assert "**Drift within the noise**: the control's 4 repeats differ by 1.02x (max/min;" in drift
    assert "no more than per-step noise alone gives" in drift
    assert "drift: the control's 4 repeats differ by 1.02x" in study_summary(store, SWEEP)
    empty = Store(tmp_path / "no-control")
    empty.append(ok_row("width", 0, {"width": 128}, 0.05))
    assert "No control rows: this sweep did not re-measure its baseline" in write_report(empty, SWEEP).read_text()


def test_rows_from_other_text_are_another_point(tmp_path):
    store = Store(tmp_path)
    key = {"config_key": "width-128"}
    store.append(ok_row("width", 0, {"width": 128}, 0.100, dataset_source="hub:Arc-Corpus-sample", **key))
    store.append(ok_row("width", 1, {"width": 128}, 0.104, dataset_source="hub-cache:Arc-Corpus-sample", **key))
    store.append(ok_row("width", 2, {"width": 128}, 0.080, dataset_source="offline:pydoc_data.topics", **key))
    width = section(write_report(store, SWEEP).read_text(), "## Study `width`")
    assert "| width | data | phase | status | median ms | 95% CI ms | repeats |" in width
    assert "| 128 | Arc-Corpus-sample | grid | ok | 102.0 |" in width  # the hub and its cache: one text, 2 repeats
    assert line_with(width, "| 128 | Arc-Corpus-sample |").split(" | ")[6] == "2"
    assert "| 128 | pydoc_data.topics | grid | ok | 80.0 |" in width


def test_noisy_rows_show_the_foreign_cpu_share_and_steal(tmp_path):
    store = Store(tmp_path)
    seen = {"measured_region_s": 3.0, "steal_s": 0.04}
    # 0.45 s of others' CPU time over 3 s of measured steps: 15% of one CPU
    store.append(ok_row("width", 0, {"width": 128}, 0.1, cv=0.12, foreign_cpu_s=0.45, **seen))
    store.append(ok_row("width", 1, {"width": 256}, 0.2, cv=0.09, foreign_cpu_s=0.0, **seen))  # noisy by itself
    store.append(ok_row("width", 2, {"width": 512}, 0.4, cv=0.02, foreign_cpu_s=2.0, **seen))  # not noisy: not shown
    store.append(ok_row("width", 3, {"width": 1024}, 0.8, cv=0.2, foreign_cpu_s=float("nan")))  # older row
    phases = section(write_report(store, SWEEP).read_text(), "## Forward / backward / optimizer")
    assert "| step ms (mean ± std) | foreign CPU (% of 1 CPU) | steal s | CV | flag | load |" in phases
    assert "in % of one CPU" in phases and "noisy by itself" in phases
    assert line_with(phases, "| width: width=128 |").endswith("| 15.0% | 0.04 | 12.0% | noisy | 0.1 → 0.2 |")
    assert line_with(phases, "| width: width=256 |").endswith("| 0.0% | 0.04 | 9.0% | noisy | 0.1 → 0.2 |")
    assert line_with(phases, "| width: width=512 |").endswith("|  |  | 2.0% |  |  |")
    assert line_with(phases, "| width: width=1024 |").endswith("| ? | ? | 20.0% | noisy | 0.1 → 0.2 |")


def test_a_study_reference_is_shown_beside_our_figures(tmp_path):
    """A plan's `reference` reaches every row of its study (column `reference`) and the report's section."""
    import json

    store = Store(tmp_path)
    reference = {"label": "the report: 8-core i5-1240P", "step_time_s": 4.55, "projected_10k_steps_s": 45360}
    for row in repeat_rows("report-80m", {"cores": 2}, [2.0, 2.2, 2.1], start=0):
        store.append(row | {"reference": json.dumps(reference), "mfu": 0.5})
    index = write_report(store, SWEEP)
    text = section(index.read_text(), "## Study `report-80m`")
    assert "**Reference: the report: 8-core i5-1240P.**" in text
    assert "| cores=2 | step time (s) | 2.1 | 4.55 | 0.46x |" in text
    assert "| cores=2 | 10,000 steps | 21000 s (5 h 50 m) | 45360 s (12 h 36 m) | 0.46x |" in text
    assert (index.parent / "report-80m.png").stat().st_size > 0
