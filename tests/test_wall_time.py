"""Where a run's wall time went: a row's parts add up to its worker's time, the driver's sections count their own
time once (nested ones apart), and the breakdown's lines add up to the run's wall time exactly."""

from __future__ import annotations

import pytest

from sweep.results import wall_time as wall_time_module
from sweep.results.wall_time import (
    TRIAL_PARTS,
    WallTime,
    breakdown_markdown,
    breakdown_text,
    load_breakdowns,
    save_breakdown,
    trial_parts,
)

ROW = {
    "status": "ok",
    "wall_s": 9.0,
    "jit_cache_prime_s": 4.0,
    "startup_s": 2.5,
    "interpreter_start_s": 0.2,
    "import_s": 1.6,
    "data_s": 0.1,
    "build_s": 0.3,
    "time_to_first_step_s": 0.9,
    "timed_region_s": 6.0,
    "measured_region_s": 4.5,
    "peak_s": 0.2,
}


def test_a_rows_parts_add_up_to_its_worker_and_priming_time():
    parts = trial_parts(ROW)
    assert list(parts) == list(TRIAL_PARTS)
    assert parts["interpreter_s"] == pytest.approx(0.5)  # 2.5 - 1.6 - 0.1 - 0.3: spawn to the worker's imports
    assert parts["warmup_s"] == pytest.approx(0.6)  # 6.0 - 0.9 - 4.5
    assert parts["exit_s"] == pytest.approx(0.3)  # 9.0 - 2.5 - 6.0 - 0.2
    assert sum(parts.values()) == pytest.approx(ROW["wall_s"] + ROW["jit_cache_prime_s"])


def test_rows_that_ran_no_steps_have_no_parts():
    assert trial_parts(ROW | {"status": "failed"}) is None
    assert trial_parts(ROW | {"shared_from": "abc"}) is None  # a copy: its measurement is counted once
    assert trial_parts(ROW | {"timed_region_s": None}) is None


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(wall_time_module.time, "perf_counter", fake)
    return fake


def test_sections_nest_and_the_lines_add_up_to_the_wall_time(clock):
    wall = WallTime()
    clock.now += 1.0  # the driver before Ray: its own
    with wall.section("ray"):
        clock.now += 3.0  # Ray starting
        with wall.section("plan"):
            clock.now += 2.0
        with wall.section("trials"):
            wall.add_row(ROW)  # 13 s of workers and priming ...
            wall.add_row(ROW | {"status": "failed"})  # ... and a failure's time stays in "between trials"
            clock.now += 15.0
        with wall.section("refinement"):
            wall.add_row(ROW | {"jit_cache_prime_s": None})  # 9 s
            clock.now += 10.0
        clock.now += 1.5  # Ray stopping
    with wall.section("report"):
        clock.now += 0.5
    result = wall.breakdown()
    assert result["total_s"] == pytest.approx(33.0)
    lines = {line["part"]: line["seconds"] for line in result["lines"]}
    assert sum(lines.values()) == pytest.approx(result["total_s"])
    assert lines["Ray start and stop"] == pytest.approx(4.5)
    assert lines["the plan expanded on each node (peaks refreshed)"] == pytest.approx(2.0)
    assert lines["between trials (Tune, placement groups, launcher)"] == pytest.approx(2.0)  # 15 - 13
    assert lines["refinement outside its trials (Tune, placement groups, launcher)"] == pytest.approx(1.0)
    assert lines["trial: measured steps"] == pytest.approx(9.0)
    assert lines["trial: priming a warm compile cache (another process)"] == pytest.approx(4.0)
    assert lines["the driver's own (outside every section)"] == pytest.approx(1.0)
    assert result["trials"] == 2 and result["steps_s"] == pytest.approx(10.2)
    assert result["fixed_median_s"] == pytest.approx((9.0 - 5.1 + 13.0 - 5.1) / 2)
    assert result["steps_share"] == pytest.approx(10.2 / 33.0)
    text = breakdown_text(result)
    assert text.startswith("where the 33 s went:") and "median fixed cost per trial" in text and "27.3%" in text


def test_each_run_of_a_sweep_keeps_its_entry(tmp_path, clock):
    assert load_breakdowns(tmp_path, "s1") == []
    assert breakdown_markdown([]).endswith("(it ran before runs recorded one).")
    wall = WallTime()
    with wall.section("trials"):
        wall.add_row(ROW)
        clock.now += 20.0
    save_breakdown(tmp_path, "s1", wall.breakdown())
    clock.now += 1.0
    save_breakdown(tmp_path, "s1", wall.breakdown(), replace_last=True)  # the same run, with its report's time
    save_breakdown(tmp_path, "s1", wall.breakdown())  # a resume: a second run
    runs = load_breakdowns(tmp_path, "s1")
    assert [run["total_s"] for run in runs] == [pytest.approx(21.0), pytest.approx(21.0)]
    assert (tmp_path / "wall_time" / "s1.json").exists() and not (tmp_path / "sweeps").exists()
    markdown = breakdown_markdown(runs)
    assert markdown.count("| part | seconds | share |") == 2 and "Run 2 of 2" in markdown
    assert "| trial: measured steps | 4.5 | 21.4% |" in markdown
