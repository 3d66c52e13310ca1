"""Across hosts: medians over repeats, speed-ups against the reference, hosts that share a name, the CLI."""

import json
import subprocess
import sys

import pytest

from sweep.results.compare import (
    CompareError,
    build_comparison,
    compare_text,
    comparison_records,
    load_rows,
    recorded_table,
    side_by_side,
    write_compare,
)
from sweep.results.store import EmptyStore, Store
from tests.conftest import REPO_ROOT

AMX = dict(
    host="alpha",
    node="10.0.0.1",
    hw_cpu_model="Xeon 8480+",
    hw_logical_cores=8,
    hw_physical_cores=4,
    hw_sockets=1,
    hw_numa_nodes=1,
    hw_smt=2,
    hw_isa="avx2,fma,avx512f,avx512_bf16,amx_tile,amx_bf16",
    hw_l1d_kb=48,
    hw_l2_kb=2048,
    hw_l3_kb=107520,
    hw_memory_gb=31.2,
    hw_mem_bw_gbs=95.25,
    hw_peak_gflops_fp32=1830.0,
    hw_kernel="6.8.0",
    sw_torch="2.5.1+cpu",
    sw_blas="mkl",
)
EPYC = dict(
    host="twin",
    node="10.0.0.2",
    hw_cpu_model="EPYC 9654",
    hw_logical_cores=16,
    hw_physical_cores=16,
    hw_sockets=2,
    hw_numa_nodes=2,
    hw_smt=1,
    hw_isa="avx2,fma,avx512f,avx512_bf16",
    hw_l1d_kb=32,
    hw_l2_kb=1024,
    hw_l3_kb=32768,
    hw_memory_gb=62.5,
    hw_mem_bw_gbs=180.0,
    hw_peak_gflops_fp32=2400.5,
    hw_kernel="6.8.0",
    sw_torch="2.5.1+cpu",
    sw_blas="openblas",
)
OLD = dict(
    host="twin",
    node="10.0.0.3",
    hw_cpu_model="Core i5-6500",
    hw_logical_cores=4,
    hw_physical_cores=4,
    hw_sockets=1,
    hw_numa_nodes=1,
    hw_smt=1,
    hw_isa="avx2,fma",
    hw_l1d_kb=32,
    hw_l2_kb=256,
    hw_l3_kb=6144,
    hw_memory_gb=15.6,
    hw_kernel="5.15.0",
    sw_torch="2.5.1+cpu",
    sw_blas="openblas",
)

# OLD's rows predate the measured bandwidth and peak columns
# step times (s): alpha repeats width=256 three times (median 0.22); twin 10.0.0.3 has no width=512 (it failed)
TIMES = {
    "alpha": {128: [0.10], 256: [0.20, 0.30, 0.22], 512: [0.40]},
    "twin2": {128: [0.05], 256: [0.088], 512: [0.25]},
    "twin3": {128: [0.20], 256: [0.44]},
}


def row(node: dict, study: str, point: dict, median: float | None, sweep="s-multi", status="ok", **extra) -> dict:
    key = study + "-" + "-".join(f"{k}{v}" for k, v in point.items())
    metrics = {"step_time_median_s": median, "tokens_per_s": 256 / median} if status == "ok" else {}
    when = "2025-01-01T00:00:00+00:00" if sweep == "s-old" else "2025-02-01T00:00:00+00:00"
    return (
        {
            "sweep": sweep,
            "recorded_at": when,
            "plan": "quick",
            "study": study,
            "config_key": key,
            "point": json.dumps(point),
            "phase": "grid",
            "status": status,
            "error": None if status == "ok" else "worker killed",
        }
        | node
        | metrics
        | extra
    )


@pytest.fixture
def store(tmp_path) -> Store:
    store = Store(tmp_path / "result")
    for node, name in ((AMX, "alpha"), (EPYC, "twin2"), (OLD, "twin3")):
        for width, medians in TIMES[name].items():
            for i, median in enumerate(medians):
                store.append(row(node, "width", {"width": width}, median, sweep="s-old" if i == 2 else "s-multi"))
    store.append(row(OLD, "width", {"width": 512}, None, status="failed"))
    store.append(row(AMX | {"node": None}, "width", {"width": 1024}, None, status="failed"))  # driver-recorded
    store.append(row(AMX, "activation", {"activation": "gelu"}, 0.5))
    store.append(row(EPYC, "activation", {"activation": "gelu"}, 0.25))
    store.append(row(AMX, "activation", {"activation": "relu"}, 0.4))  # one host only: plotted, not tabled
    for attention in ("local", "sliding"):
        for window in (64, 128):
            base = 0.1 * window / 64 * (1.5 if attention == "sliding" else 1)
            store.append(row(AMX, "grid", {"attention": attention, "window": window}, base))
            store.append(row(EPYC, "grid", {"attention": attention, "window": window}, base / 2))
    return store


def cells_of(comparison, study: str, point_value) -> dict:
    key = next(k for k in comparison.compared if k[0] == study and point_value in comparison.points[k].values())
    return comparison.cells[key] | {"_key": key}


def test_medians_ratios_and_reference(store):
    c = build_comparison(load_rows(store))
    assert c.labels == ["alpha", "twin (10.0.0.2)", "twin (10.0.0.3)"]  # same hostname, different IPs: kept apart
    assert c.ref == "alpha" and "the most ok rows: 11" in c.ref_reason  # 5 width + 2 activation + 4 grid
    assert c.sweeps == ["s-multi", "s-old"]
    w256 = cells_of(c, "width", 256)
    assert w256["alpha"].rows == 3 and w256["alpha"].step_time_s == pytest.approx(0.22)  # median of 0.20, 0.30, 0.22
    assert c.speedup(w256["_key"], "twin (10.0.0.2)") == pytest.approx(0.22 / 0.088)  # 2.50x faster than alpha
    assert c.speedup(w256["_key"], "twin (10.0.0.3)") == pytest.approx(0.22 / 0.44)  # 0.50x
    w512 = cells_of(c, "width", 512)
    assert set(w512) - {"_key"} == {"alpha", "twin (10.0.0.2)"}  # the failed row is no measurement
    assert c.speedup(w512["_key"], "twin (10.0.0.2)") == pytest.approx(0.40 / 0.25)
    # relu ran on alpha only: not compared; width 1024 only failed
    assert [c.points[k] for k in c.compared if k[0] == "activation"] == [{"activation": "gelu"}]
    assert [c.points[k]["width"] for k in c.compared if k[0] == "width"] == [128, 256, 512]  # numeric order

    text = compare_text(c)
    line = next(ln for ln in text.splitlines() if ln.split()[:2] == ["width", "width=256"])
    # alpha's three rows predate step_times_s: the interval resamples the rows alone, widened for 3 (t, 2 df)
    assert line.split()[2:] == [
        "220.0",
        "(n=3,",
        "170.3–506.5)",
        "1,164",
        "88.0",
        "2,909",
        "2.50x",
        "440.0",
        "582",
        "0.50x",
    ]
    assert w256["alpha"].estimate.repeats == 3 and w256["alpha"].estimate.low_s == pytest.approx(0.1703, abs=1e-4)
    assert "alpha's median step time / this host's median step time" in " ".join(text.split())


def test_one_sweep_only_and_explicit_reference(store):
    c = build_comparison(load_rows(store, "s-multi"), ref="10.0.0.2")
    assert c.ref == "twin (10.0.0.2)" and c.sweeps == ["s-multi"]
    w256 = cells_of(c, "width", 256)
    assert w256["alpha"].rows == 2 and w256["alpha"].step_time_s == pytest.approx(0.25)  # 0.20 and 0.30
    assert c.speedup(w256["_key"], "alpha") == pytest.approx(0.088 / 0.25)
    assert build_comparison(load_rows(store, "latest")).sweeps == ["s-multi"]  # recorded after s-old
    with pytest.raises(CompareError, match=r"'twin' names 2 hosts .*give the node IP"):
        build_comparison(load_rows(store), ref="twin")
    with pytest.raises(CompareError, match=r"'gamma' names no compared host; known: alpha = 10\.0\.0\.1; twin \(10"):
        build_comparison(load_rows(store), ref="gamma")


def test_by_node_labels_and_same_numbers(store):
    c = build_comparison(load_rows(store), by="node")
    assert c.labels == ["alpha (10.0.0.1)", "twin (10.0.0.2)", "twin (10.0.0.3)"]
    assert c.ref == "alpha (10.0.0.1)"
    assert cells_of(c, "width", 256)["alpha (10.0.0.1)"].rows == 3
    # alpha's driver-recorded failure has no IP but its hostname has exactly one: it joins alpha, not a group of its own
    assert sum(1 for r in c.rows["alpha (10.0.0.1)"] if r["status"] == "failed") == 1
    by_host = build_comparison(load_rows(store), by="host")
    assert len(by_host.rows["alpha"]) == len(c.rows["alpha (10.0.0.1)"]) == 12


def test_recorded_variables_table(store):
    columns, table = recorded_table(build_comparison(load_rows(store)))
    assert columns == ["recorded", "alpha", "twin (10.0.0.2)", "twin (10.0.0.3)"]
    rows = {r[0]: r[1:] for r in table}
    assert rows["CPU model"] == ["Xeon 8480+", "EPYC 9654", "Core i5-6500"]
    assert rows["ISA amx_tile"] == ["yes", "no", "no"] and rows["ISA amx_bf16"] == ["yes", "no", "no"]
    assert rows["ISA avx512f"] == ["yes", "yes", "no"] and rows["ISA avx2"] == ["yes", "yes", "yes"]
    assert "ISA sve" not in rows  # no host has it
    assert rows["memory bandwidth GB/s (triad, all cores)"] == ["95.2", "180", ""]  # 10.0.0.3's rows predate it
    assert rows["fp32 matmul peak GFLOP/s (all cores)"] == ["1830", "2400.5", ""]
    assert rows["L3 KB"] == ["107520", "32768", "6144"] and rows["NUMA nodes"] == ["1", "2", "1"]
    assert rows["BLAS"] == ["mkl", "openblas", "openblas"] and rows["kernel"] == ["6.8.0", "6.8.0", "5.15.0"]


def test_markdown_and_plots(store, tmp_path):
    path = write_compare(build_comparison(load_rows(store)), tmp_path / "out")
    text = path.read_text()
    assert text.startswith("# Across hosts\n")
    assert "| alpha ms (ref) | tokens/s | twin (10.0.0.2) ms | tokens/s | vs ref | twin (10.0.0.3) ms |" in text
    assert (
        "| width | width=256 | 220.0 (n=3, 170.3–506.5) | 1,164 | 88.0 | 2,909 | 2.50x | 440.0 | 582 | 0.50x |" in text
    )
    assert "| width | width=512 | 400.0 | 640 | 250.0 | 1,024 | 1.60x |  |  |  |" in text  # failed on 10.0.0.3
    # ok rows, configs shared with the reference, geometric mean of 2, 2.5, 1.6, 2, 2, 2, 2, 2 (= 2^8 ^ 1/8)
    assert "| twin (10.0.0.2) | 8 | 8 | 2.00x | 1.60x–2.50x |" in text
    assert "| grid | attention=local window=128 |" in text.split("attention=sliding window=64")[0]  # plan order kept
    assert "| ISA amx_tile | yes | no | no |" in text
    pngs = sorted(p.name for p in path.parent.glob("*.png"))
    assert pngs == ["compare-activation.png", "compare-grid.png", "compare-width.png"]
    for name in pngs:
        assert f"]({name})" in text
        data = (path.parent / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000


def test_nothing_to_compare_and_empty_store(tmp_path):
    with pytest.raises(EmptyStore, match="holds no trials"):
        load_rows(Store(tmp_path / "empty"))
    store = Store(tmp_path / "one")
    store.append(row(AMX, "width", {"width": 128}, 0.1))
    store.append(row(EPYC, "width", {"width": 256}, 0.1))
    with pytest.raises(CompareError, match=r"no config finished ok on two or more hosts .*alpha 1, twin 1"):
        build_comparison(load_rows(store))
    with pytest.raises(EmptyStore, match="'nope'"):
        load_rows(store, "nope")


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "bench.py", "compare", *args], cwd=REPO_ROOT, capture_output=True, text=True)


def test_cli(store, tmp_path):
    result = bench("--result-dir", str(store.root))
    assert result.returncode == 0, result.stderr
    assert "220.0 (n=3, 170.3–506.5)" in result.stdout and "ISA amx_tile" in result.stdout
    md = store.root / "report" / "compare" / "compare.md"
    assert f"comparison: {md}" in result.stdout and (md.parent / "compare-width.png").stat().st_size > 5000

    result = bench("--result-dir", str(store.root), "--by", "node", "--ref", "twin (10.0.0.3)", "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["ref"] == "twin (10.0.0.3)" and data["recorded"]["twin (10.0.0.3)"]["CPU model"] == "Core i5-6500"
    alpha = next(r for r in data["configs"] if r["node"] == "alpha (10.0.0.1)" and r["point"] == "width=128")
    assert alpha["speedup_vs_ref"] == pytest.approx(0.20 / 0.10) and alpha["rows"] == 1
    assert alpha["step_time_low_s"] is None and alpha["speedup_low"] is None  # one row: no interval claimed

    result = bench("--result-dir", str(store.root), "--format", "csv", "--out", str(tmp_path / "elsewhere"))
    assert result.returncode == 0 and result.stdout.startswith("study,point,config_key,host,rows,")
    assert (tmp_path / "elsewhere" / "compare.md").exists()

    result = bench("--result-dir", str(store.root), "--ref", "gamma")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().startswith("bench.py: error: reference 'gamma' names no compared host; known: alpha")
    assert "twin (10.0.0.2) = 10.0.0.2" not in result.stderr and "twin (10.0.0.3)" in result.stderr

    result = bench("--result-dir", str(tmp_path / "empty"))
    assert result.returncode == 2 and "holds no trials" in result.stderr and "Traceback" not in result.stderr


HUB = "hub:Arc-Corpus-sample"


def test_cells_with_repeats_carry_intervals_and_verdicts(tmp_path):
    store = Store(tmp_path / "result")
    steps = [0.97, 0.99, 1.0, 1.01, 1.03]
    medians = {  # width 128: the same on both hosts within noise; width 256: twin twice as fast
        ("alpha", 128): [0.100, 0.104, 0.097],
        ("twin", 128): [0.102, 0.098, 0.105],
        ("alpha", 256): [0.200, 0.204, 0.197],
        ("twin", 256): [0.100, 0.102, 0.099],
    }
    for (host, width), values in medians.items():
        for i, median in enumerate(values):
            node = AMX if host == "alpha" else EPYC
            times = [median * f for f in steps]
            store.append(row(node, "width", {"width": width}, median, step_times_s=times, repeat=i, dataset_source=HUB))
    # the same config on the offline corpus: another cell, never pooled with the hub's rows
    store.append(row(AMX, "width", {"width": 128}, 0.08, dataset_source="offline:pydoc_data.topics"))
    store.append(row(EPYC, "width", {"width": 128}, 0.08, dataset_source="offline:pydoc_data.topics"))
    c = build_comparison(load_rows(store))
    columns, table = side_by_side(c)
    lines = {(r[1]): r[2:] for r in table}
    assert set(lines) == {"width=128 (Arc-Corpus-sample)", "width=128 (pydoc_data.topics)", "width=256"}
    same = lines["width=128 (Arc-Corpus-sample)"]
    assert same[0] == "100.0 (n=3, 89.7–114.1)" and same[2] == "102.0 (n=3, 89.2–113.3)"
    assert same[4] == "0.98x (0.88–1.12, no measurable effect)"
    assert lines["width=256"][4] == "2.00x (1.88–2.11)"
    assert lines["width=128 (pydoc_data.topics)"] == ["80.0", "3,200", "80.0", "3,200", "1.00x"]  # single rows
    records = [r for r in comparison_records(c) if r["host"] == "twin" and r["point"] == "width=256"]
    assert records[0]["speedup_low"] == pytest.approx(1.88, abs=0.005) and records[0]["rows"] == 3
