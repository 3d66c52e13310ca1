"""Plans expand to exactly their studies' points; every problem is reported before anything runs."""

import re
import subprocess
import sys
import time

import pytest
import yaml

from sweep.plan import PlanError, available_plans, expand_plan, load_plan, read_plan_document
from tests.conftest import REPO_ROOT, TINY
from tests.test_cores import make_sysfs
from trainables.config import build_config

BASE = {"depth": 2, "width": 64, "heads": 2, "seq_len": 64, "vocab_size": 512}


def plan(*studies, **top):
    return {"name": "t", "baseline": dict(BASE), "studies": list(studies)} | top


def problems_of(document, **kwargs) -> list[str]:
    with pytest.raises(PlanError) as err:
        expand_plan(document, "test.yaml", **kwargs)
    return err.value.problems


def test_shipped_plans_are_valid(simulated_cpu, tmp_path):
    # as on a 2-core machine without cpufreq, with this test's CPU flags, whatever machine runs the test;
    # points it cannot run are recorded (a missing allocator) rather than errors
    make_sysfs(tmp_path, sockets=1, cores=2, smt=1)
    here = {"allowed_cpus": {0, 1}, "sysfs_root": tmp_path, "record_unsupported": True}
    assert {"smoke", "quick", "full"} <= set(available_plans())
    assert len(load_plan("smoke", **here).trials) == 4
    quick = load_plan("quick", **here)
    studies = {t.study for t in quick.trials}
    assert {"width", "batch_size", "attention", "precision", "cores", "allocator"} <= studies
    # the system axes (README.md, "Compilers and the system under the trial"): a study each; on this node without SMT
    # or a second NUMA node, what needs them is skipped. The compiler studies (cold Inductor compiles) are the
    # compilers plan's: the quick plan keeps to its 15-minute budget
    assert {"omp_proc_bind", "omp_wait", "numa", "dataset_tokens"} <= studies
    assert not {"compile", "fusion", "jit_cache"} & studies
    assert (quick.budget_s, quick.delta, quick.repeats) == (900.0, 0.05, 2)
    assert "smt" in studies  # its {} point (whole cores); the siblings point is skipped with the reason
    assert [t.point for t in quick.trials if t.study == "smt"] == [{}]
    assert any(
        "smt=siblings skipped: smt='siblings' needs SMT: this node has 1 thread per core" in s for s in quick.skipped
    )
    assert [t.point["numa"] for t in quick.trials if t.study == "numa"] == ["local"]
    compiler_studies = {"cxx_opt", "march", "simdlen", "compile", "fusion", "jit_cache"}
    assert {t.study for t in load_plan("compilers", **here).trials} >= compiler_studies
    assert {"framework", "blas"} <= studies and "blas-jax" not in studies  # XLA's backends: the full plan's
    assert [t.config.framework for t in quick.trials if t.study == "framework"] == ["torch", "jax", "numpy"]
    frameworks = load_plan("frameworks", **here)
    assert {t.config.width for t in frameworks.trials if t.study.endswith("-large")} == {512}
    assert {t.study for t in quick.trials if t.unsupported} <= {"allocator"}  # the rest runs on two cores
    # two points or more per study, but a skip_unsupported study keeps only what this CPU can run
    skippable = {s["name"] for s in quick.studies if s.get("skip_unsupported")}
    assert all(len([t for t in quick.trials if t.study == s]) >= 2 for s in studies - skippable)
    assert not {"freq_ghz", "governor", "turbo"} & studies  # no cpufreq here: skipped with the reason
    isa = [t.point["isa"] for t in quick.trials if t.study == "isa"]
    if simulated_cpu == "zen3-avx2":
        assert isa == ["avx2"]
        assert (
            "study 'isa': point isa=avx512 skipped: isa=avx512: this CPU lacks avx512bw, avx512dq, avx512f, avx512vl"
            in quick.skipped
        )
    else:
        assert isa == ["avx2", "avx512"]
    compilers = load_plan("compilers", **here)
    march = [t.config.march for t in compilers.trials if t.study == "march"]
    assert march == [None, "x86-64-v3", "x86-64"]  # both CPUs have AVX2: x86-64-v3 code runs on each
    assert {t.config.framework for t in compilers.trials if t.study.startswith("jax-")} == {"jax"}
    full = load_plan("full", **here)
    assert max(t.config.depth for t in full.trials) == 32 and max(t.config.width for t in full.trials) == 2048
    # `repeats: 3` in the quick plan: the same trials, each to run three times
    document, source = read_plan_document("quick")
    quick3 = expand_plan(document | {"repeats": 3}, source, **here)
    assert quick3.repeats == 3 and [t.identity for t in quick3.trials] == [t.identity for t in quick.trials]


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
            "study 'w': give one of 'axis' with 'values', 'axes', or 'points'",
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
            plan({"name": "f", "axes": {"framework": ["torch", "numpy"], "blas": ["mkl"]}}),
            "study 'f': point framework=numpy blas=mkl: blas='mkl' cannot run with framework='numpy' "
            "(it supports blas openblas)",
        ),
        (
            plan({"name": "f", "axis": "framework", "values": ["jax"], "with": {"widht": 128}}),
            "study 'f': key 'with': must map config keys to values",
        ),
        (
            plan({"name": "h", "axis": "head_dim", "values": ["auto", 32]}),
            "study 'h': point head_dim=32: the same config as another point",
        ),
        (
            plan({"name": "w", "axis": "width", "values": [64]}, repeats=0),
            "plan: key 'repeats': 0 must be an integer from 1 to 20",
        ),
        (
            plan({"name": "w", "axis": "width", "values": [64]}, repeats=21),
            "plan: key 'repeats': 21 must be an integer from 1 to 20",
        ),
        (
            plan({"name": "w", "axis": "width", "values": [64]}, repeats="3"),
            "plan: key 'repeats': '3' must be an integer",
        ),
        (
            plan({"name": "w", "axis": "width", "values": [64]}, repeats=True),
            "plan: key 'repeats': True must be an integer",
        ),
        (
            plan({"name": "w", "axis": "width", "values": [64]}, order_seed=-1),
            "plan: key 'order_seed': -1 must be an integer >= 0",
        ),
        (
            plan({"name": "w", "axis": "width", "values": [64]}, control_every=1.5),
            "plan: key 'control_every': 1.5 must be an integer >= 0 (0: no control points)",
        ),
        (
            plan({"name": "control", "axis": "width", "values": [64]}),
            "study 'control': the name 'control' is reserved for the sweep's control points (control_every): "
            "give the study another name",
        ),
        (
            plan({"name": "w", "axis": "width", "values": [63]}) | {"baseline": BASE | {"heads": 3}},
            "plan: key 'control_every': the control point is the baseline, which is not a valid config: "
            "heads=3 must divide width=64",
        ),
    ],
)
def test_malformed_plans_name_study_and_key(document, expected):
    assert any(expected in p for p in problems_of(document)), problems_of(document)


def test_the_order_keys_default_and_the_control_point_is_the_baseline():
    p = expand_plan(plan({"name": "w", "axis": "width", "values": [32, 64]}), "x")
    assert (p.repeats, p.order_seed, p.control_every) == (1, 0, 10)
    assert (p.control.study, p.control.point, p.control.config) == ("control", {}, build_config(BASE))
    assert p.control.identity != p.trials[1].identity  # width=64 is the baseline's config, in another study
    p = expand_plan(plan({"name": "w", "axis": "width", "values": [32]}, repeats=4, order_seed=9, control_every=0), "x")
    assert (p.repeats, p.order_seed, p.control_every, p.control) == (4, 9, 0, None)
    # without control points a baseline only the studies' points make valid is fine, as before
    odd = plan({"name": "w", "axis": "width", "values": [63]}, control_every=0) | {"baseline": BASE | {"heads": 3}}
    assert [t.config.width for t in expand_plan(odd, "x").trials] == [63]


def test_a_baseline_this_machine_cannot_run_has_no_control_points_here():
    document = plan({"name": "t", "axis": "threads", "values": [1]}) | {"baseline": BASE | {"threads": 2}}
    p = expand_plan(document, "x", allowed_cpus={0})
    assert p.control is None
    assert p.skipped == [
        "control points skipped: the baseline cannot run here: threads=2 exceeds the 1 cores available to this trial"
    ]


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
    assert "repeats 1, order_seed 0, control_every 10 (the baseline, study control)" in done.stdout


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


# ---- files that cannot be plans ------------------------------------------------------------------------------
def billion_laughs() -> str:
    """Nine levels of nine aliases under 600 bytes: 9**9 = 387,420,489 strings once expanded. Without the check,
    `bench.py plan` spent a minute and 4 GB (then a MemoryError under `ulimit -v 4000000`) on str() of it."""
    lines = ["name: bomb", "lol:", '  - &l0 "lol"']
    lines += [f"  - &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
    return "\n".join([*lines, "baseline: {dataset: *l9}", "studies: [{name: w, axis: width, values: [64]}]"]) + "\n"


def expanded_strings(node, counted: dict) -> int:
    """Strings in a loaded YAML value with every shared reference counted each time (memoised: no expansion)."""
    if isinstance(node, str):
        return 1
    if id(node) not in counted:
        counted[id(node)] = sum(expanded_strings(child, counted) for child in node)
    return counted[id(node)]


def test_an_alias_bomb_is_refused_before_anything_walks_it(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(billion_laughs())
    # a real bomb: safe_load builds it in a millisecond, as shared lists; walking its baseline visits 9**9 strings
    assert len(path.read_bytes()) < 600
    assert expanded_strings(yaml.safe_load(path.read_text())["baseline"]["dataset"], {}) == 9**9
    started = time.perf_counter()
    with pytest.raises(PlanError) as err:
        read_plan_document(str(path))
    assert err.value.problems == [
        "more than 100,000 YAML values with its aliases expanded (an alias bomb?): a plan has a few hundred"
    ]
    assert time.perf_counter() - started < 5


def test_aliases_a_plan_may_use_are_kept(tmp_path):
    path = tmp_path / "shared.yaml"
    path.write_text(
        "name: shared\n"
        "baseline: {depth: 2, width: 64, heads: 2, seq_len: 64, vocab_size: 512}\n"
        "studies:\n"
        "  - {name: a, axis: width, values: &widths [32, 64]}\n"
        "  - {name: b, axes: {width: *widths, depth: [1, 2]}}\n"
    )
    document, source = read_plan_document(str(path))
    assert document["studies"][1]["axes"]["width"] == [32, 64] and source == str(path)
    assert len(expand_plan(document, source).trials) == 6


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"PAR1\x15\x04\x15\xff\xfe\x00", "not UTF-8 text: byte 0xff at offset 7"),
        (
            b"name: x\nbaseline: {depth: 2\nstudies: [\n",
            "not valid YAML: did not find expected ',' or '}' at line 3, column 8",
        ),
        (
            b"name: x\n\tbaseline: {}\n",
            "not valid YAML: found a tab character that violates indentation at line 2, column 1",
        ),
        (
            b"name: !!python/object/apply:os.system ['echo owned']\n",
            "not valid YAML: could not determine a constructor for the tag "
            "'tag:yaml.org,2002:python/object/apply:os.system' at line 1, column 7",
        ),
        # safe_load composes recursively: this would be a RecursionError with a traceback
        (b"[" * 10_000 + b"]" * 10_000, "nested deeper than 50 levels: a plan needs five"),
        (b"# a comment\n" * 100_000, "larger than 1 MiB: a plan is a few kB of YAML (is this the right file?)"),
    ],
    ids=["binary", "broken", "tab", "python-tag", "deep", "large"],
)
def test_a_file_that_cannot_be_a_plan_is_one_problem(tmp_path, content, problem):
    path = tmp_path / "p.yaml"
    path.write_bytes(content)
    with pytest.raises(PlanError) as err:
        read_plan_document(str(path))
    assert err.value.problems == [problem]


def test_a_folder_is_not_a_plan(tmp_path):
    (tmp_path / "plans.yaml").mkdir()
    with pytest.raises(PlanError) as err:
        read_plan_document(str(tmp_path / "plans.yaml"))
    assert err.value.problems == ["not a regular file"]


def test_a_study_may_start_from_a_changed_baseline():
    document = plan(
        {"name": "f", "axis": "framework", "values": ["torch", "jax", "numpy"]},
        {"name": "f-large", "axis": "framework", "values": ["torch", "jax"], "with": {"width": 128, "heads": 4}},
    )
    trials = expand_plan(document, "test.yaml").trials
    assert [(t.study, t.config.framework, t.config.width, t.config.heads) for t in trials] == [
        ("f", "torch", 64, 2),
        ("f", "jax", 64, 2),
        ("f", "numpy", 64, 2),
        ("f-large", "torch", 128, 4),
        ("f-large", "jax", 128, 4),
    ]
    # each framework's own autos, resolved per point
    assert [(t.config.compile, t.config.attn_backend, t.config.blas) for t in trials[:3]] == [
        ("eager", "sdpa", "mkl"),
        ("jit", "sdpa", "eigen"),
        ("eager", "manual", "openblas"),
    ]


def test_listed_points_references_and_a_plan_that_records_what_it_cannot_run(tmp_path):
    document = {
        "name": "ablation",
        "record_unsupported": True,
        "baseline": TINY | {"dataset": "offline"},
        "studies": [
            {
                "name": "all",
                "points": [{}, {"optimizer": "lamb", "freeze_layers": 1}],
                "reference": {"label": "a claim: 2-4x", "step_time_s": 1.5},
            },
            {"name": "sizes", "axis": "model", "values": ["small"]},
            {"name": "too-many-cores", "axis": "cores", "values": [4096]},
        ],
    }
    plan = expand_plan(document, "test")
    points = [t.point for t in plan.trials if t.study == "all"]
    assert points == [{}, {"optimizer": "lamb", "freeze_layers": 1}]
    assert all(t.reference == {"label": "a claim: 2-4x", "step_time_s": 1.5} for t in plan.trials if t.study == "all")
    # the preset sets the size, whatever the baseline's width and depth
    (small,) = [t for t in plan.trials if t.study == "sizes"]
    assert (small.config.width, small.config.depth, small.config.heads) == (768, 12, 12)
    # record_unsupported: true in the plan: a point this machine cannot run is a row that says why, not an error
    (many,) = [t for t in plan.trials if t.study == "too-many-cores"]
    assert "4096" in many.unsupported


@pytest.mark.parametrize(
    "study, problem",
    [
        (
            {"name": "r", "axis": "depth", "values": [2], "reference": {"step_time_s": 1}},
            "must be a mapping with a 'label'",
        ),
        (
            {"name": "r", "axis": "depth", "values": [2], "reference": {"label": "x", "speed": 1}},
            "unknown figure 'speed'",
        ),
        ({"name": "r", "axis": "depth", "values": [2], "reference": {"label": "x"}}, "give at least one figure"),
        ({"name": "p", "points": [{"widht": 3}]}, "key 'points': unknown key 'widht'"),
        ({"name": "p", "points": [{}, {}]}, "key 'points': duplicate points"),
        ({"name": "p", "points": [], "axis": "depth"}, "give one of 'axis' with 'values', 'axes', or 'points'"),
    ],
)
def test_bad_points_and_references_are_named(study, problem):
    with pytest.raises(PlanError, match=re.escape(problem)):
        expand_plan({"name": "t", "baseline": TINY | {"dataset": "offline"}, "studies": [study]}, "test")


def test_a_yaml_boolean_point_is_labelled_as_the_config_spells_it():
    """`values: [on, off]` reaches the plan as booleans: the points and labels say on/off, as the configs do."""
    p = expand_plan(
        plan({"name": "fusion", "axis": "fusion", "values": [True, False], "with": {"compile": "inductor"}}), "t.yaml"
    )
    assert [t.point for t in p.trials] == [{"fusion": "on"}, {"fusion": "off"}]
    assert [t.config.fusion for t in p.trials] == ["on", "off"]
