"""Repeats, their shuffled order and the control point: every point measured `repeats` times, far apart, with the
baseline re-measured between them to show drift; resume re-runs exactly the missing (node, trial, repeat)."""

import itertools
import json

import pytest

from sweep.ledger import SweepLedger, pair_columns, pair_identity, pair_of
from sweep.manifest import load_manifest
from sweep.nodes import Node, NodePlan
from sweep.plan import PlanError, expand_plan
from sweep.results.store import Store
from sweep.runner import node_pairs, with_repeats
from sweep.scheduler import sweep_order
from tests.bench_process import TINY_BASELINE, kill_session, run_bench, start_bench, write_plan
from tests.test_sweep_end_to_end import wait_for_rows
from trainables.columns import unknown_columns
from trainables.config import build_config

NODE = Node("10.0.0.1", "a" * 8, "box", 2)


# ---- the order ------------------------------------------------------------------------------------
def test_every_point_and_repeat_runs_exactly_once_in_rounds():
    order = sweep_order(5, 3, seed=0)
    assert sorted(order) == list(itertools.product(range(5), range(3))) and len(order) == 15
    # round r holds repeat r of every point
    assert [repeat for _, repeat in order] == [0] * 5 + [1] * 5 + [2] * 5
    assert sweep_order(1, 4, seed=0) == [(0, 0), (0, 1), (0, 2), (0, 3)]  # one point: nothing to interleave


@pytest.mark.parametrize("points, closest", [(2, 2), (3, 2), (4, 2), (7, 2), (8, 3), (67, 17)])
def test_two_repeats_of_a_point_are_a_quarter_round_apart_or_more(points, closest):
    gaps = []
    for seed in range(300):
        order = [point for point, _ in sweep_order(points, 4, seed)]
        assert all(a != b for a, b in itertools.pairwise(order)), (seed, order)  # never back to back
        places = {p: [i for i, q in enumerate(order) if q == p] for p in range(points)}
        gaps += [b - a for at in places.values() for a, b in itertools.pairwise(at)]
    assert min(gaps) == closest  # a quarter of a round, plus one
    assert sum(gaps) / len(gaps) == pytest.approx(points, rel=0.1)  # a round apart on average


def test_the_same_seed_gives_the_same_order_and_another_seed_another():
    assert sweep_order(6, 3, seed=7) == sweep_order(6, 3, seed=7)
    assert sweep_order(6, 3, seed=7) != sweep_order(6, 3, seed=8)
    # the rounds are shuffled: plan order (study after study) is not what runs
    assert [p for p, _ in sweep_order(6, 1, seed=7)] != list(range(6))
    assert len({tuple(sweep_order(6, 3, seed)) for seed in range(20)}) == 20


def test_control_points_come_first_and_after_every_k_trials():
    order = sweep_order(7, 3, seed=1, control_every=5)  # 21 trials
    controls = [(position, repeat) for position, (point, repeat) in enumerate(order) if point is None]
    assert controls == [(0, 0), (6, 1), (12, 2), (18, 3), (24, 4)]
    assert len(order) == 21 + 5
    assert [p for p in order if p[0] is not None] == sweep_order(7, 3, seed=1)  # the trials keep their order
    # exactly K trials between two control points; the last K trials get one after them too
    assert [p for p, _ in sweep_order(2, 2, seed=0, control_every=2)][::3] == [None, None, None]
    assert len(sweep_order(2, 2, seed=0, control_every=2)) == 4 + 3
    # a node with K trials or fewer gets none (one control point alone shows no drift); 0 turns them off
    assert sweep_order(5, 2, seed=0, control_every=10) == sweep_order(5, 2, seed=0)
    assert sweep_order(50, 1, seed=0, control_every=0) == sweep_order(50, 1, seed=0)


# ---- pairs, identities, resume ---------------------------------------------------------------------
def node_plan(studies: list[dict], **order) -> NodePlan:
    document = {"name": "p", "baseline": TINY_BASELINE, "studies": studies} | order
    return NodePlan(NODE, expand_plan(document, "p.yaml", record_unsupported=True, allowed_cpus={0, 1}))


def test_a_node_runs_every_repeat_and_its_control_points_in_the_sweep_order():
    plan = node_plan(
        [
            {"name": "width", "axis": "width", "values": [32, 48, 64]},
            {"name": "threads", "axis": "threads", "values": [1, 4]},
        ],
        repeats=2,
        order_seed=5,
        control_every=4,
    )
    pairs = node_pairs(plan)
    # threads=4 cannot run on two cores: recorded once (nothing to repeat), outside the order
    assert [(p["study"], p["point"], p["repeat"], p["trial_order"]) for p in pairs[:1]] == [
        ("threads", {"threads": 4}, 0, None)
    ]
    ordered = pairs[1:]
    assert [p["trial_order"] for p in ordered] == list(range(8 + 3))  # 4 points x 2 repeats + 3 control points
    expected = sweep_order(4, 2, seed=5, control_every=4)
    assert [(p["index"], p["repeat"]) for p in ordered] == [(point, repeat) for point, repeat in expected]
    controls = [p for p in ordered if p["study"] == "control"]
    assert [(p["trial_order"], p["repeat"], p["phase"], p["point"], p["index"]) for p in controls] == [
        (0, 0, "control", {}, None),
        (5, 1, "control", {}, None),
        (10, 2, "control", {}, None),
    ]
    baseline_key = build_config(TINY_BASELINE).config_key()
    assert {p["identity"] for p in controls} == {f"10.0.0.1/control/{baseline_key}/{k}" for k in range(3)}
    assert {p["order_seed"] for p in pairs} == {5}
    assert len({p["identity"] for p in pairs}) == len(pairs) == 12


def test_studies_sharing_a_config_share_one_measurement_per_repeat(tmp_path):
    # the baseline (width 64, depth 2) is a point of both studies: it runs once per repeat, recorded for both
    plan = node_plan(
        [{"name": "width", "axis": "width", "values": [32, 64]}, {"name": "depth", "axis": "depth", "values": [2, 3]}],
        repeats=2,
        control_every=0,
    )
    pairs = node_pairs(plan)
    runs = [p for p in pairs if p.get("measured_by") is None]
    assert len(pairs) == 8 and len(runs) == 6  # 3 distinct configs x 2 repeats; 2 more rows copied
    baseline = build_config(TINY_BASELINE).config_key()
    sharers = [p for p in pairs if p.get("measured_by") is not None]
    assert [(p["study"], p["point"], p["config"]["width"]) for p in sharers] == [("depth", {"depth": 2}, 64)] * 2
    for sharer in sharers:
        runner = pairs[sharer["measured_by"]]
        assert (
            runner["study"] == "width"
            and runner["point"] == {"width": 64}
            and runner["shares"] == [pairs.index(sharer)]
        )
        assert (runner["repeat"], runner["trial_order"]) == (sharer["repeat"], sharer["trial_order"])
    assert sorted(p["trial_order"] for p in runs) == list(range(6))
    # the order is over the 3 distinct configs (in plan order: width 32, the baseline, depth 3)
    distinct = [{"width": 32}, {"width": 64}, {"depth": 3}]
    assert [(distinct.index(p["point"]), p["repeat"]) for p in runs] == sweep_order(3, 2, seed=0)

    sweep = SweepLedger("s-1", "p", Store(tmp_path), pairs=pairs, node_columns={NODE.ip: {"host": "box"}}, quiet=True)
    runner_index = sharers[0]["measured_by"]
    assert runner_index in sweep.missing() and pairs.index(sharers[0]) not in sweep.missing()  # waits for its runner
    runner = pairs[runner_index]
    row = {"node": NODE.ip, "host": "box", "config_key": baseline, "status": "ok", "timed_region_s": 2.0}
    sweep.record(row | pair_columns(runner) | {"time_to_first_step_s": 0.5})
    stored = sorted(Store(tmp_path).rows("s-1"), key=lambda r: r["study"])
    assert [(r["study"], r["point"], r["shared_from"]) for r in stored] == [
        ("depth", '{"depth": 2}', runner["identity"]),
        ("width", '{"width": 64}', None),
    ]
    assert sweep.steps_s == 1.5 and sweep.shared_here == 1  # the copy is no second measurement
    # the other repeat's sharer still waits for its own runner
    assert set(sweep.missing()) == set(range(8)) - {runner_index, pairs.index(sharers[0]), pairs.index(sharers[1])}


def test_points_that_differ_only_in_run_only_keys_are_not_shared():
    # timeout_s is left out of config_key, but it changes how the trial runs: two measurements
    plan = node_plan(
        [{"name": "timeout", "axis": "timeout_s", "values": [1]}, {"name": "ok", "axis": "seed", "values": [0]}],
        control_every=0,
    )
    pairs = node_pairs(plan)
    assert pairs[0]["config"]["timeout_s"] != pairs[1]["config"]["timeout_s"]
    assert [p.get("measured_by") for p in pairs] == [None, None]


def test_a_sharer_left_without_its_copy_runs_itself(tmp_path):
    plan = node_plan(
        [{"name": "width", "axis": "width", "values": [64]}, {"name": "depth", "axis": "depth", "values": [2]}],
        control_every=0,
    )
    pairs = node_pairs(plan)
    assert [p.get("measured_by") for p in pairs] == [None, 0]
    store = Store(tmp_path)
    # a driver killed between the measuring row and its copy
    store.append(
        {
            "sweep": "s-1",
            "host": "box",
            "node": NODE.ip,
            "study": "width",
            "config_key": pairs[0]["config"] and build_config(TINY_BASELINE).config_key(),
            "repeat": 0,
        }
    )
    sweep = SweepLedger("s-1", "p", store, pairs=pairs, quiet=True)
    assert sweep.missing() == [1]


def test_identities_carry_the_repeat_and_old_rows_count_as_repeat_0(tmp_path):
    assert pair_identity("10.0.0.1", "width", "k1", 2) == "10.0.0.1/width/k1/2"
    assert pair_identity(None, "width", "k1", None) == "/width/k1/0"
    store = Store(tmp_path)
    old = {"sweep": "s-1", "host": "h", "node": "10.0.0.1", "study": "width", "config_key": "k1", "status": "ok"}
    store.append(old)  # written before rows had a repeat column
    assert store.identities("s-1") == {"10.0.0.1/width/k1/0"}
    store.append(old | {"repeat": 1})
    store.append(old | {"repeat": 2, "config_key": "k2"})
    assert store.identities("s-1") == {"10.0.0.1/width/k1/0", "10.0.0.1/width/k1/1", "10.0.0.1/width/k2/2"}


def test_the_ledger_records_each_repeat_once(tmp_path):
    plan = node_plan([{"name": "width", "axis": "width", "values": [32]}], repeats=3, control_every=0)
    pairs = node_pairs(plan)
    sweep = SweepLedger("s-1", "p", Store(tmp_path), pairs=pairs, node_columns={NODE.ip: {"host": "box"}}, quiet=True)
    cfg = build_config(TINY_BASELINE | {"width": 32})
    row = {"node": NODE.ip, "host": "box", "study": "width", "config_key": cfg.config_key(), "status": "failed"}
    assert sweep.record(row | {"repeat": 1, "phase": "grid"}) is not None
    assert sweep.record(row | {"repeat": 1, "phase": "grid"}) is None  # Tune replayed it: not stored twice
    assert [pairs[i]["repeat"] for i in sweep.missing()] == [0, 2]
    assert sweep.pending_by_node([2, 0]) == {NODE.ip: [0, 2]}  # in the sweep's order, whatever order asked


def test_a_manifest_written_before_repeats_resumes_as_repeat_0(tmp_path):
    trials = node_plan([{"name": "width", "axis": "width", "values": [32, 48]}]).plan.trials
    old_pairs = []
    for i, t in enumerate(trials):
        pair = pair_of(i, NODE.ip, "box", t)
        for key in ("repeat", "trial_order", "order_seed", "phase"):
            del pair[key]
        old_pairs.append(pair | {"identity": f"{NODE.ip}/{t.study}/{t.config_key}"})  # the old identity
    manifest = {"sweep": "old-1", "plan": "p", "source": "p.yaml", "state": "running", "refine": {}}
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "old-1.json").write_text(json.dumps(manifest | {"nodes": {}, "trials": old_pairs}))
    store = Store(tmp_path)
    store.append(
        {"sweep": "old-1", "host": "box", "node": NODE.ip, "study": "width", "config_key": trials[0].config_key}
    )
    data = load_manifest(tmp_path, None)
    sweep = SweepLedger("old-1", "p", store, pairs=data["trials"], quiet=True)
    assert [p["identity"] for p in data["trials"]] == [f"{NODE.ip}/width/{t.config_key}/0" for t in trials]
    assert sweep.missing() == [1]  # the stored row is repeat 0 of the first pair: only the second runs again
    assert sweep.pending_by_node([1, 0]) == {NODE.ip: [0, 1]}  # no recorded order: the plan's


def test_repeats_from_the_command_line_are_checked_before_ray_starts():
    document = {"name": "p", "baseline": TINY_BASELINE, "studies": [], "repeats": 2}
    assert with_repeats(document, "p.yaml", None, resume=False) is document
    assert with_repeats(document, "p.yaml", 5, resume=False)["repeats"] == 5
    with pytest.raises(PlanError, match="--repeats 21: must be an integer from 1 to 20"):
        with_repeats(document, "p.yaml", 21, resume=False)
    with pytest.raises(PlanError, match="a resumed sweep keeps the repeats and order it started with"):
        with_repeats(None, None, 2, resume=True)


# ---- a real sweep -----------------------------------------------------------------------------------
def test_repeats_and_control_points_through_bench_run_and_a_resume_after_a_kill(tmp_path):
    plan = write_plan(
        tmp_path / "repeats.yaml",
        [{"name": "width", "axis": "width", "values": [32, 48, 64]}],
        name="repeats",
    )
    document = plan.read_text() + "order_seed: 7\ncontrol_every: 2\n"
    plan.write_text(document)
    store = Store(tmp_path / "store")
    port = ("--dashboard-port", "8465")  # not Ray's default: another sweep on this machine may hold that one
    proc = start_bench("run", "--plan", str(plan), "--repeats", "2", "--result-dir", str(store.root), *port)
    try:
        wait_for_rows(store, 3, proc)
    finally:
        kill_session(proc)  # kill -9 of the driver mid-sweep
    first_run = proc.stdout.read()
    before = {p.name: p.stat().st_mtime_ns for p in store.files()}
    # 3 points x 2 repeats, and control points first and after every 2 trials: 6 + 4 trials
    assert 3 <= len(before) < 10 and "[1/10]" in first_run

    done = run_bench("run", "--resume", "--result-dir", str(store.root), *port)
    assert done.returncode == 0, done.stdout[-3000:]
    rows = store.rows()
    assert len(rows) == 10 and f"; {10 - len(before)} rows recorded by this run (0 of them" in done.stdout
    assert "[10/10]" in done.stdout
    after = {p.name: p.stat().st_mtime_ns for p in store.files()}
    assert all(after[name] == mtime for name, mtime in before.items())  # earlier rows untouched
    identities = {(r["study"], r["config_key"], r["repeat"]) for r in rows}
    assert len(identities) == 10  # nothing lost, no repeat run twice
    for r in rows:
        assert r["status"] == "ok" and r["order_seed"] == 7 and unknown_columns(r) == []
    grid = [r for r in rows if r["study"] == "width"]
    assert sorted((r["width"], r["repeat"]) for r in grid) == [(w, k) for w in (32, 48, 64) for k in (0, 1)]
    assert {r["phase"] for r in grid} == {"grid"}
    controls = sorted((r for r in rows if r["study"] == "control"), key=lambda r: r["repeat"])
    assert [(r["phase"], r["point"], r["repeat"]) for r in controls] == [("control", "{}", k) for k in range(4)]
    assert {r["config_key"] for r in controls} == {build_config(TINY_BASELINE).config_key()}
    # the rows ran in the sweep's order, the resumed ones too: started one after another in trial_order
    by_start = sorted(rows, key=lambda r: r["started_at"])
    assert [r["trial_order"] for r in by_start] == list(range(10))
    expected = sweep_order(3, 2, seed=7, control_every=2)
    widths = [32, 48, 64]
    assert [(None if r["study"] == "control" else widths.index(r["width"]), r["repeat"]) for r in by_start] == expected
