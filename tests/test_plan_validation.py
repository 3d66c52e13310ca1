"""Plans expand to exactly their studies' points; every problem is reported before anything runs."""

import subprocess
import sys

import pytest
import yaml

from sweep.plan import PlanError, available_plans, expand_plan, load_plan
from tests.conftest import REPO_ROOT

BASE = {"depth": 2, "width": 64, "heads": 2, "seq_len": 64, "vocab_size": 512}


def plan(*studies, **top):
    return {"name": "t", "baseline": dict(BASE), "studies": list(studies)} | top


def problems_of(document, **kwargs) -> list[str]:
    with pytest.raises(PlanError) as err:
        expand_plan(document, "test.yaml", **kwargs)
    return err.value.problems


def test_shipped_plans_are_valid():
    assert {"smoke", "quick", "full"} <= set(available_plans())
    assert len(load_plan("smoke").trials) == 4
    quick = load_plan("quick")
    studies = {t.study for t in quick.trials}
    assert {"width", "seq_len", "batch_size", "attention", "precision", "compile", "threads", "allocator"} <= studies
    assert all(len([t for t in quick.trials if t.study == s]) >= 2 for s in studies)
    full = load_plan("full", record_unsupported=True)
    assert max(t.config.depth for t in full.trials) == 32 and max(t.config.width for t in full.trials) == 2048


def test_trials_are_the_studies_points():
    p = expand_plan(
        plan(
            {"name": "width", "axis": "width", "values": [32, 64]},
            {"name": "grid", "axes": {"width": [32, 64], "attention": ["full", "sliding"]}},
            {"name": "again", "axis": "width", "values": [64]},
        )
        | {"baseline": BASE | {"window": 16}},
        "x",
    )
    assert [(t.study, t.point) for t in p.trials[:2]] == [("width", {"width": 32}), ("width", {"width": 64})]
    grid = [t.point for t in p.trials if t.study == "grid"]
    assert grid == [
        {"width": 32, "attention": "full"},
        {"width": 32, "attention": "sliding"},
        {"width": 64, "attention": "full"},
        {"width": 64, "attention": "sliding"},
    ]
    # a point two studies share runs once per study: same config_key, different identity
    shared = [t for t in p.trials if t.point == {"width": 64}]
    assert (
        len(shared) == 2 and shared[0].config_key == shared[1].config_key and shared[0].identity != shared[1].identity
    )
    assert all(t.config.depth == 2 and t.config.window == 16 for t in p.trials)  # the baseline supplies the rest


@pytest.mark.parametrize(
    "document, expected",
    [
        (plan({"name": "w", "axis": "widht", "values": [1]}), "study 'w': key 'widht': unknown axis"),
        (
            plan({"name": "w", "axis": "width", "values": [64]}, {"name": "w", "axis": "depth", "values": [2]}),
            "study 'w': duplicate study name",
        ),
        (
            plan({"name": "w", "axis": "width", "values": [65]}),
            "study 'w': point width=65: heads=2 must divide width=65",
        ),
        (
            plan({"name": "a", "axis": "activation", "values": ["tanh"]}),
            "study 'a': point activation=tanh: unknown activation 'tanh' (gelu, relu, silu)",
        ),
        (plan({"name": "w", "axis": "width"}), "study 'w': key 'values': missing"),
        (plan({"name": "w", "axis": "width", "values": []}), "study 'w': key 'width': values must be a non-empty list"),
        (plan({"name": "w", "axis": "width", "values": [64, 64]}), "study 'w': key 'width': duplicate values"),
        (
            plan({"name": "w", "axis": "width", "axes": {"width": [64]}}),
            "study 'w': give either 'axis' with 'values', or 'axes'",
        ),
        (
            plan({"name": "w", "axis": "width", "values": [64], "refine": 3}),
            "study 'w': key 'refine': must be {points: N}",
        ),
        (plan({"name": "w", "axis": "width", "values": [64], "colour": 3}), "study 'w': key 'colour': unknown"),
        (
            plan({"name": "a", "axis": "activation", "values": ["gelu", "relu"], "refine": {"points": 2}}),
            "study 'a': key 'refine': needs a single numeric 'axis'",
        ),
        (
            plan({"name": "w", "axis": "width", "values": [64], "refine": {"points": 2}}),
            "study 'w': key 'refine': needs at least two numeric values",
        ),
        (plan({"name": "w", "axis": "width", "values": [64]}, colour="red"), "plan: key 'colour': unknown"),
        (
            plan({"name": "w", "axis": "width", "values": [64]}) | {"baseline": BASE | {"dept": 3}},
            "baseline: key 'dept': unknown key",
        ),
        (
            plan({"name": "k", "axis": "kv_heads", "values": [3]}),
            "study 'k': point kv_heads=3: kv_heads=3 must divide heads=2",
        ),
        (plan() | {"studies": []}, "plan: key 'studies': must be a non-empty list"),
        (
            plan({"name": "h", "axis": "head_dim", "values": ["auto", 32]}),
            "study 'h': point head_dim=32: the same config as another point",
        ),
    ],
)
def test_malformed_plans_name_study_and_key(document, expected):
    assert any(expected in p for p in problems_of(document)), problems_of(document)


def test_every_problem_is_reported_at_once():
    problems = problems_of(
        plan({"name": "a", "axis": "widht", "values": [1]}, {"name": "b", "axis": "depth", "values": [0]})
    )
    assert len(problems) == 2


def test_values_the_machine_cannot_honour():
    document = plan({"name": "threads", "axis": "threads", "values": [1, 64]})
    assert any(
        "threads=64 exceeds the" in p and "--record-unsupported" in p for p in problems_of(document, allowed_cpus={0})
    )
    recorded = expand_plan(document, "x", record_unsupported=True, allowed_cpus={0})
    assert [t.unsupported is None for t in recorded.trials] == [True, False]


def test_cli_rejects_a_bad_plan_with_exit_2_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(plan({"name": "w", "axis": "width", "values": [65]})))
    for args in (["plan", str(bad)], ["run", "--plan", str(bad), "--result-dir", str(tmp_path / "store")]):
        done = subprocess.run(
            [sys.executable, "bench.py", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 2
        assert "study 'w': point width=65: heads=2 must divide width=65" in done.stderr
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "store").exists()


def test_cli_prints_the_trials():
    done = subprocess.run(
        [sys.executable, "bench.py", "plan", "smoke"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0
    assert "4 trials in 2 studies" in done.stdout and "attention=sliding" in done.stdout


def test_machine_value_ranges(tmp_path):
    from tests.simsysfs import make_cpufreq_tree

    root = make_cpufreq_tree(tmp_path / "sys", cpus=6)
    document = plan(
        {"name": "cores", "axis": "cores", "values": "1..all"},
        {"name": "pow2", "axis": "threads", "values": "pow2..all"},
        {"name": "freq", "axis": "freq_ghz", "values": "min..max"},
        {"name": "gov", "axis": "governor", "values": "available"},
    )
    p = expand_plan(document, "x", allowed_cpus=set(range(6)), sysfs_root=root)
    values = lambda study, key: [t.point[key] for t in p.trials if t.study == study]  # noqa: E731
    assert values("cores", "cores") == [1, 2, 3, 4, 5, 6]
    assert values("pow2", "threads") == [1, 2, 4, 6]
    assert values("freq", "freq_ghz") == [0.8, 1.2, 1.6, 2.0, 2.4, 2.8, 3.2, 3.6]
    assert values("gov", "governor") == ["performance", "powersave"]


def test_hardware_studies_are_skipped_where_not_controllable(tmp_path):
    empty = tmp_path / "sys"
    (empty / "devices/system/cpu").mkdir(parents=True)
    document = plan(
        {"name": "width", "axis": "width", "values": [32]},
        {"name": "freq", "axis": "freq_ghz", "values": "min..max", "skip_unsupported": True},
        {"name": "turbo", "axis": "turbo", "values": [False, True], "skip_unsupported": True},
    )
    p = expand_plan(document, "x", sysfs_root=empty)
    assert [t.study for t in p.trials] == ["width"]
    assert p.skipped[0] == f"study 'freq': skipped: freq_ghz: no cpufreq policy in {empty}/devices/system/cpu/cpufreq"
    assert len(p.skipped) == 3 and "point turbo=False skipped: turbo: neither" in p.skipped[1]
    # without skip_unsupported the same study is an error, and a typo in a range always is
    assert (
        "study 'freq': freq_ghz: no cpufreq policy"
        in problems_of(plan({"name": "freq", "axis": "freq_ghz", "values": "min..max"}), sysfs_root=empty)[0]
    )
    typo = plan({"name": "c", "axis": "cores", "values": "1..al", "skip_unsupported": True})
    assert "unknown value range '1..al' for cores" in problems_of(typo)[0]
