"""A sweep's time budget (sweep/budget.py, sweep/racing_rounds.py): its keys checked before Ray starts, and on a real
local Ray a budgeted sweep killed (kill -9) in the middle of a racing round, resumed, that re-runs nothing, loses
nothing and keeps to its budget within one trial's length."""

from __future__ import annotations

import json
import time

import pytest

from sweep.budget import Budget, parse_duration
from sweep.plan import PlanError, expand_plan
from sweep.results.store import Store
from sweep.results.wall_time import load_breakdowns
from tests.bench_process import TINY_BASELINE, kill_session, run_bench, start_bench, write_plan


@pytest.mark.parametrize(
    "text, seconds", [(900, 900.0), ("900", 900.0), ("900s", 900.0), ("15m", 900.0), ("1.5h", 5400.0), (2.5, 2.5)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["15 minutes", "0", "-5m", "", "m", True])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_bad_budget_and_delta_are_plan_problems():
    document = {"name": "b", "baseline": TINY_BASELINE, "studies": [{"name": "w", "axis": "width", "values": [32, 64]}]}
    with pytest.raises(PlanError) as error:
        expand_plan(document | {"budget": "soon", "delta": 1.5}, "b.yaml")
    assert "plan: key 'budget': 'soon' is not a duration" in str(error.value)
    assert "plan: key 'delta': 1.5 must be a number from 0 to below 1" in str(error.value)
    plan = expand_plan(document | {"budget": "2m", "delta": 0.1}, "b.yaml")
    assert (plan.budget_s, plan.delta) == (120.0, 0.1)


def test_a_resumed_budget_spends_only_what_is_left():
    budget = Budget(100.0, spent_s=40.0)
    state = budget.to_manifest()
    assert state["spent_s"] >= 40.0 and "started" not in state
    resumed = Budget.from_manifest(state | {"spent_s": 70.0})
    assert 100 - 70 - 10 - 1 < resumed.left_s() <= 100 - 70 - 10  # less the closing work after the last trial


def manifest_of(store: Store) -> dict:
    files = list((store.root / "sweeps").glob("*.json"))
    return json.loads(files[0].read_text()) if files else {}


def test_kill_9_in_a_racing_round_then_resume_re_runs_nothing_loses_nothing_and_keeps_the_budget(tmp_path):
    # two points with the same speed (the data's size changes only how long a run lasts): racing cannot decide them
    # at a tiny model's noise, so rounds follow until the budget is spent
    plan = write_plan(tmp_path / "b.yaml", [{"name": "data", "points": [{}, {"dataset_tokens": 4096}]}], name="b")
    store = Store(tmp_path / "store")
    budget = 150
    proc = start_bench(
        "run", "--plan", str(plan), "--budget", f"{budget}s", "--repeats", "2", "--result-dir", str(store.root)
    )
    try:
        deadline = time.time() + 240
        while True:  # until a racing round (round 2 on) has begun and holds a row, not all of them
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.time() < deadline, "no racing round began"
            manifest = manifest_of(store)
            racing = [p for p in manifest.get("trials", []) if p["repeat"] >= 2 and p.get("phase") == "grid"]
            done = {r["repeat"] for r in store.rows() if r.get("phase") == "grid"} if store.files() else set()
            if racing and max(done, default=0) >= 2:
                break
            time.sleep(0.2)
    finally:
        kill_session(proc)
    before = {p.name: p.stat().st_mtime_ns for p in store.files()}

    resumed = run_bench("run", "--resume", "--result-dir", str(store.root), timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    manifest = manifest_of(store)
    rows = store.rows()
    identities = [f"{r['node']}/{r['study']}/{r['config_key']}/{r['repeat']}" for r in rows]
    assert len(identities) == len(set(identities))  # nothing duplicated
    kept = {p["identity"] for p in manifest["trials"] if not p.get("dropped")}
    assert kept == set(identities)  # nothing lost: every pair the budget kept has its row
    after = {p.name: p.stat().st_mtime_ns for p in store.files()}
    assert all(after[name] == mtime for name, mtime in before.items())  # earlier rows untouched
    state = manifest["budget"]
    assert state["rounds"] > 2 and state["stopped"] in ("budget", "decided", "rounds")  # tiny trials: 20 rounds fit
    assert "minimum detectable effect at 95%" in resumed.stdout and f"budget {budget / 60:.1f} min" in resumed.stdout
    ended = {"budget": "budget spent", "decided": "every ratio decided", "rounds": "round limit"}[state["stopped"]]
    assert f"rounds (2 for every point, then racing), ended: {ended}" in resumed.stdout
    report = (store.root / "report" / manifest["sweep"] / "index.md").read_text()
    assert "## What this sweep could resolve" in report and "**Minimum detectable effect** (95%): ±" in report
    # the study's one ratio (its reference: the smallest dataset_tokens, the baseline's unset value reads last)
    resolved = report[report.index("## What this sweep could resolve") : report.index("## Drift")]
    assert resolved.count("| data | ") == 2 and ("undecided at ±" in resolved or "no effect larger than 5%" in resolved)
    # the budget: both runs together within it, give or take one trial (the longest trial these runs saw, with Tune
    # and the launcher around it); the killed run counts up to its last manifest
    longest = max(r["wall_s"] for r in rows if r.get("wall_s")) + 5.0
    assert state["spent_s"] <= budget + longest, (state["spent_s"], longest)
    (resumed_run,) = load_breakdowns(store.root, manifest["sweep"])
    assert resumed_run["total_s"] <= state["spent_s"]
