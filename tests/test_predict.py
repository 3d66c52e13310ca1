"""The step-time model (sweep/predict/): the fit recovers known efficiencies from synthetic rows, predict refuses what
it cannot cover with the reason, a fingerprint file alone gives a prediction that scales with its peak, the cost of a
run, and `bench.py predict` end to end on a tiny store written with the real Store class. No sweep runs."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from sweep.predict.cost import cluster_prices, label_price, run_cost
from sweep.predict.features import CLASSES, PredictError, Roofs, config_from_values, seconds_at_roof, work_of
from sweep.predict.fit import fit_points, store_points
from sweep.predict.model import predict_step
from sweep.predict.roofs import fingerprint_roofs
from sweep.predict.validate import validate
from sweep.results.store import Store
from tests.conftest import REPO_ROOT

PEAK, BANDWIDTH = 200.0, 40.0  # the synthetic node's roofs: GFLOP/s, GB/s
# the efficiencies the synthetic rows are generated from (layer: seconds per layer pass)
TRUE = {"matmul": 0.7, "attention": 0.3, "elementwise": 0.25, "optimizer": 0.6, "layer": 2e-3}
NOISE = 0.03
NODE = {"host": "alpha", "node": "10.0.0.1", "status": "ok", "sweep": "synthetic", "study": "synthetic"}
NODE |= {"peak_dtype": "fp32", "threads": 2, "machine_peak_gflops": PEAK, "roofline_bandwidth_gbs": BANDWIDTH}


def inverse(true: dict) -> np.ndarray:
    return np.array([true[c] if c == "layer" else 1 / true[c] for c in CLASSES])


def synthetic_rows(seed: int = 0, noise: float = NOISE, node: dict = NODE, speed: float = 1.0) -> list[dict]:
    """One row per config of a small grid (width, depth, seq_len, batch), its step time from TRUE plus noise, on a
    node whose roofs are `speed` times PEAK and BANDWIDTH."""
    rng = np.random.default_rng(seed)
    x = inverse(TRUE)
    rows = []
    grid = itertools.product((128, 256, 512), (2, 4, 8), (128, 512), (1, 4))
    for width, depth, seq_len, batch in grid:
        cfg = config_from_values({"width": width, "depth": depth, "seq_len": seq_len, "batch_size": batch})
        features = seconds_at_roof(work_of(cfg), Roofs(speed * PEAK, speed * BANDWIDTH, "synthetic"))
        step = float(features @ x) * (1 + noise * rng.standard_normal())
        optimizer = (
            features[CLASSES.index("optimizer")] * x[CLASSES.index("optimizer")] * (1 + noise * rng.standard_normal())
        )
        roofs = {"machine_peak_gflops": speed * PEAK, "roofline_bandwidth_gbs": speed * BANDWIDTH}
        measured = {"config_key": cfg.config_key(), "step_time_median_s": step, "optimizer_s": optimizer}
        rows.append(cfg.to_dict() | node | roofs | measured)
    return rows


@pytest.fixture(scope="module")
def points():
    return store_points(synthetic_rows()).points["alpha"]


def test_the_fit_recovers_known_efficiencies_from_noisy_rows(points):
    assert len(points) == 36
    fitted = fit_points(points).efficiencies()
    for c in CLASSES:
        assert fitted[c] == pytest.approx(TRUE[c], rel=0.15), c
    # without noise the recovery is exact but for the weak pull toward one efficiency
    exact = fit_points(store_points(synthetic_rows(noise=0.0)).points["alpha"]).efficiencies()
    for c in CLASSES:
        assert exact[c] == pytest.approx(TRUE[c], rel=0.01), c


def test_leave_one_config_out_errors_are_the_noise(points):
    store = store_points(synthetic_rows())
    loo, isa, cores = validate(store)
    errors = loo.errors()
    assert len(errors) == 36 and not loo.refused()
    assert np.median(errors) < 0.04  # 3% noise: a held-out config is missed by about that
    assert isa.held == {} and "no rows for this check" in isa.notes[0]
    assert cores.held == {} and "no rows for this check" in cores.notes[0]


def test_predict_refuses_a_framework_or_precision_with_no_rows(points):
    store = store_points(synthetic_rows())
    for values, named in (({"framework": "numpy"}, "framework=numpy precision=fp32"), ({"precision": "bf16"}, "bf16")):
        with pytest.raises(PredictError) as refused:
            predict_step(config_from_values(values), points, store.roofs["alpha"], "on alpha")
        message = str(refused.value)
        assert named in message and "no ok rows of that on alpha" in message
        assert "framework=torch precision=fp32 (36 configs)" in message  # what it does cover


def test_predict_refuses_a_config_outside_the_covered_ranges(points):
    roofs = store_points(synthetic_rows()).roofs["alpha"]
    with pytest.raises(
        PredictError,
        match=r"matmul work .* outside 10x of what the fit of framework=torch precision=fp32 on alpha measured",
    ):
        predict_step(config_from_values({"width": 4096, "depth": 32}), points, roofs, "on alpha")
    with pytest.raises(
        PredictError,
        match="compile=inductor: the fit of framework=torch precision=fp32 on alpha measured compile eager only",
    ):
        predict_step(config_from_values({"compile": "inductor"}), points, roofs, "on alpha")
    with pytest.raises(PredictError, match="threads=1, isa=none, dtype fp32: node alpha has no matmul peak"):
        predict_step(config_from_values({"threads": 1}), points, roofs, "on alpha")


def test_an_unmeasured_config_is_predicted_within_its_interval(points):
    roofs = store_points(synthetic_rows()).roofs["alpha"]
    cfg = config_from_values({"width": 384, "depth": 6, "seq_len": 256, "batch_size": 2})
    truth = float(seconds_at_roof(work_of(cfg), Roofs(PEAK, BANDWIDTH, "")) @ inverse(TRUE))
    prediction = predict_step(cfg, points, roofs, "on alpha")
    assert prediction.step_time_s == pytest.approx(truth, rel=0.05)
    assert prediction.low_s < truth < prediction.high_s and prediction.interval_configs == 36
    assert prediction.tokens_per_s == pytest.approx(512 / prediction.step_time_s)


def fingerprint(peak: float, bandwidth: float = BANDWIDTH) -> dict:
    """What `bench.py hw --json` prints, reduced to what predict reads."""
    peaks = [{"threads": t, "fp32_gflops": peak * t / 2, "machine_fp32_gflops": peak * t / 2, "bf16_gflops": None,
              "triad_gbs": bandwidth} for t in (1, 2)]  # fmt: skip
    return {"host": "beta", "fingerprint_id": "f00", "peaks": {"host": "beta", "fingerprint_id": "f00", "peaks": peaks}}


def test_a_fingerprint_alone_gives_a_step_time_that_scales_with_its_peak(points):
    cfg = config_from_values({"width": 256, "depth": 4})
    one = predict_step(cfg, points, fingerprint_roofs(fingerprint(PEAK)), "on alpha")
    two = predict_step(cfg, points, fingerprint_roofs(fingerprint(2 * PEAK)), "on alpha")
    assert one.node == "beta (fingerprint f00)" and one.threads == 2 and one.step_time_s > 0
    compute = ("matmul", "attention")
    for c in CLASSES:  # twice the peak halves the matmul classes' time and leaves the others
        assert two.breakdown[c] == pytest.approx(one.breakdown[c] / (2 if c in compute else 1), rel=1e-9)
    assert two.step_time_s < one.step_time_s
    with pytest.raises(PredictError, match="holds no measured peaks"):
        fingerprint_roofs({"host": "beta", "peaks": {}}, "hw.json")
    with pytest.raises(PredictError, match="isa=avx2, dtype fp32: node beta .* in its fingerprint file"):
        predict_step(config_from_values({"isa": "avx2"}), points, fingerprint_roofs(fingerprint(PEAK)), "on alpha")


def test_the_cost_of_a_run():
    run = run_cost(0.5, 1000, tokens=1e6 + 1, price=(3.6, "--price-per-hour"))
    assert run.steps == 1001 and run.seconds == pytest.approx(500.5) and run.cost == pytest.approx(0.5005)
    assert run_cost(0.5, 1000).steps == 10_000 and run_cost(0.5, 1000).cost is None
    assert label_price("ray start --head --labels=bench-price-per-hour=0.68,zone=a") == 0.68
    assert label_price("""ray start --labels='{"bench-price-per-hour": "1.5"}'""") == 1.5
    assert label_price("ray start --head --port=6379") is None


def test_prices_from_a_cluster_yaml(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text(
        "provider: {type: local, head_ip: 10.0.0.1, worker_ips: [10.0.0.2, 10.0.0.3]}\n"
        "head_start_ray_commands: ['ray start --head --labels=bench-price-per-hour=2']\n"
        "worker_start_ray_commands: ['ray start --labels \"bench-price-per-hour=0.5\"']\n"
    )
    assert cluster_prices(path) == {"10.0.0.1": 2.0, "10.0.0.2": 0.5, "10.0.0.3": 0.5}
    from ray._private.label_utils import parse_node_labels_string, validate_node_labels

    validate_node_labels(parse_node_labels_string("bench-price-per-hour=0.68"))  # a label `ray start` accepts
    assert cluster_prices(REPO_ROOT / "cluster.yaml") == {}  # the shipped one names no price
    assert cluster_prices(tmp_path / "absent.yaml") == {}


def bench(*args):
    return subprocess.run(
        [sys.executable, "bench.py", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )


def test_bench_predict_end_to_end_on_a_real_store(tmp_path):
    store = Store(tmp_path / "store")
    for row in synthetic_rows():
        store.append(row)
    hw = tmp_path / "hw.json"
    hw.write_text(json.dumps(fingerprint(2 * PEAK)))
    common = ("--result-dir", str(store.root), "--price-per-hour", "3.6")
    done = bench("predict", "width=384", "depth=6", "--tokens", "1e6", "--json", *common)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    truth = float(
        seconds_at_roof(work_of(config_from_values({"width": 384, "depth": 6})), Roofs(PEAK, BANDWIDTH, ""))
        @ inverse(TRUE)
    )
    assert out["predicted_step_time_s"] == pytest.approx(truth, rel=0.05)
    assert out["interval_low_s"] < out["predicted_step_time_s"] < out["interval_high_s"]
    assert out["tokens_per_s"] == pytest.approx(256 / out["predicted_step_time_s"])
    assert out["fitted_on"] == {"framework": "torch", "precision": "fp32", "nodes": ["alpha"], "sweeps": ["synthetic"],
                                "configs": 36, "rows": 36}  # fmt: skip
    assert out["run"]["steps"] == math.ceil(1e6 / 256) and out["run"]["cost"] == pytest.approx(
        out["run"]["seconds"] / 1000
    )
    assert out["run_10k_steps"]["seconds"] == pytest.approx(1e4 * out["predicted_step_time_s"])
    assert out["node"] == "alpha" and out["cheapest_per_token"] == "alpha" and out["refused"] == {}

    text = bench("predict", "width=384", "depth=6", "--fingerprint", str(hw), "--result-dir", str(store.root))
    assert text.returncode == 0, text.stderr
    assert (
        text.stdout.startswith("beta (fingerprint f00): predicted step time ") and "fitted on 36 configs" in text.stdout
    )

    refused = bench("predict", "framework=jax", "--result-dir", str(store.root))
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert refused.stderr.startswith("bench.py: error: framework=jax precision=fp32: no ok rows of that on alpha")

    # a second node with twice the roofs: both predicted, the prices from a cluster.yaml's node labels
    gamma = NODE | {"host": "gamma", "node": "10.0.0.2"}
    for row in synthetic_rows(seed=1, node=gamma, speed=2.0):
        store.append(row)
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(
        "provider: {type: local, head_ip: 10.0.0.1, worker_ips: [10.0.0.2]}\n"
        "head_start_ray_commands: ['ray start --head --labels=bench-price-per-hour=1']\n"
        "worker_start_ray_commands: ['ray start --labels=bench-price-per-hour=3']\n"
    )
    both = bench("predict", "width=384", "--json", "--cluster", str(cluster), "--result-dir", str(store.root))
    assert both.returncode == 0, both.stderr
    out = json.loads(both.stdout)
    alpha, gamma = sorted(out["per_node"], key=lambda r: r["node"])
    assert gamma["predicted_step_time_s"] == pytest.approx(alpha["predicted_step_time_s"] / 2, rel=0.06)
    assert alpha["run"]["price_per_hour"] == 1.0 and gamma["run"]["price_per_hour"] == 3.0
    assert out["fastest_per_token"] == "gamma" and out["cheapest_per_token"] == "alpha"  # half the time, 3x the price

    validated = bench("predict", "--validate", "--result-dir", str(store.root))
    assert validated.returncode == 0, validated.stderr
    assert "  alpha: 36 configs predicted, median " in validated.stdout and "  overall: 72 configs" in validated.stdout
    assert "no rows for this check in the store" in validated.stdout
