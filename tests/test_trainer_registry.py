"""Frameworks plug in through the trainer registry, each with its declaration of what it can run; a fused-step trainer
runs through the real worker, without torch."""

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, TINY
from tests.fake_framework.trainer import FakeTrainer
from trainables.columns import unknown_columns
from trainables.config import ConfigError, build_config
from trainables.timing import PHASES_FUSED, measure
from trainables.trainer import framework_names, framework_support, load_trainer, parse_trainers

FAKE = "fake=tests.fake_framework"  # a package with its own declaration (support.py)
FAKE_CLASS = "fake=tests.fake_framework.trainer:FakeTrainer"  # the older form: a trainer class, no declaration
# the config modules: what a trial's keys mean and how they are checked, for every framework alike
CONFIG_MODULES = ("config.py", "keys.py", "trial_config.py", "validation.py")


def python(code: str, **env) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=os.environ | env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_registry_lists_the_three_frameworks():
    assert framework_names()[:3] == ("torch", "jax", "numpy")
    assert load_trainer("torch").NAME == "torch"
    with pytest.raises(ConfigError, match="unknown framework 'mxnet' \\(torch, jax, numpy"):
        build_config({"framework": "mxnet"})
    with pytest.raises(ValueError, match="framework='mxnet' has no trainer \\(registered: torch, jax, numpy"):
        load_trainer("mxnet")


def test_bench_trainers_is_parsed_into_names_and_targets():
    assert parse_trainers(f" {FAKE} , b=pkg.mod:B,") == {"fake": "tests.fake_framework", "b": "pkg.mod:B"}
    assert parse_trainers(FAKE_CLASS) == {"fake": "tests.fake_framework.trainer:FakeTrainer"}
    assert parse_trainers("") == {}
    for wrong in ("fake=", "=tests.fake_framework", "fake=tests.fake_framework.trainer:"):
        with pytest.raises(ValueError, match=f"BENCH_TRAINERS: '{wrong}' is not name=package or name=module:Class"):
            parse_trainers(wrong)


def test_a_registered_framework_is_a_choice():
    code = "from trainables.config import CHOICES; print(CHOICES['framework'])"
    assert python(code) == "('torch', 'jax', 'numpy')"
    assert python(code, BENCH_TRAINERS=FAKE) == "('torch', 'jax', 'numpy', 'fake')"
    assert python(code, BENCH_TRAINERS=FAKE_CLASS) == "('torch', 'jax', 'numpy', 'fake')"


def test_importing_the_config_and_registry_imports_no_framework():
    code = (
        "import sys, trainables.config, trainables.trainer, trainables.timing; "
        "print([name for name in ('torch', 'jax', 'numpy') if name in sys.modules])"
    )
    assert python(code, BENCH_TRAINERS=FAKE) == "[]"  # the fake's declaration is read, its NumPy trainer is not


# what build_config makes of `values` with the fake registered: the config's autos, or the refusal
BUILD = (
    "import sys; from trainables.config import ConfigError, build_config\n"
    "try:\n"
    "    cfg = build_config(dict(framework='fake', dataset='offline', **{values}))\n"
    "    print(cfg.compile, cfg.attn_backend, cfg.precision, cfg.optimizer, cfg.blas)\n"
    "except ConfigError as err:\n"
    "    print(err)"
)


def build_fake(registration: str, values: dict) -> str:
    return python(BUILD.format(values=values), BENCH_TRAINERS=registration)


def test_the_fake_frameworks_declaration_is_enforced_by_build_config():
    assert build_fake(FAKE, {}) == "eager manual fp32 adamw openblas"  # its autos: the first of each declared value
    assert build_fake(FAKE, {"compile": "inductor"}) == (
        "compile='inductor' cannot run with framework='fake' (it supports compile eager)"
    )
    assert (
        build_fake(FAKE, {"blas": "mkl"}) == "blas='mkl' cannot run with framework='fake' (it supports blas openblas)"
    )
    assert build_fake(FAKE, {"attn_backend": "sdpa"}).startswith("attn_backend='sdpa' cannot run with framework='fake'")
    assert build_fake(FAKE, {"freeze_layers": 1}) == (
        "freeze_layers=1 is applied only by framework='torch'; framework='fake' needs freeze_layers=0"
    )
    assert build_fake(FAKE, {"fusion": "off"}).startswith(
        "fusion='off' needs a compiler with fusion passes (framework='fake' has none)"
    )
    assert build_fake(FAKE, {"precision": "q16"}).startswith("unknown precision 'q16'")  # still the keys' vocabulary


def test_a_trainer_class_without_a_declaration_is_held_to_the_choices_only():
    # today's autos: compile eager, attn_backend sdpa, blas left to the framework
    assert build_fake(FAKE_CLASS, {}) == "eager sdpa fp32 adamw None"
    assert build_fake(FAKE_CLASS, {"blas": "mkl", "precision": "bf16"}) == "eager sdpa bf16 adamw mkl"
    assert build_fake(FAKE_CLASS, {"compile": "jit", "fusion": "off"}) == "jit sdpa fp32 adamw None"
    assert build_fake(FAKE_CLASS, {"blas": "cublas"}).startswith("unknown blas 'cublas'")
    code = "from trainables.trainer import load_trainer; print(load_trainer('fake').__name__)"
    assert python(code, BENCH_TRAINERS=FAKE_CLASS) == python(code, BENCH_TRAINERS=FAKE) == "FakeTrainer"


def framework_names_in(source: str, names=("torch", "jax", "numpy", "fake")) -> list[str]:
    """The framework names a module's source spells, as words or as a package (torch_backend), comments included."""
    return re.findall(rf"\b({'|'.join(names)})(?:_backend)?\b", source, flags=re.IGNORECASE)


def test_the_config_modules_name_no_framework():
    # a framework is added by its package and one registry line: nothing in the config says which ones exist
    planted = 'if cfg.framework != "torch":  # JAX too\n    from trainables.numpy_backend import support\n'
    assert framework_names_in(planted) == ["torch", "JAX", "numpy"]  # the check can fail
    assert framework_names_in("torchao, numpyish, jit, inductor") == []  # other words that start alike pass
    for module in CONFIG_MODULES:
        source = (REPO_ROOT / "trainables" / module).read_text()
        assert framework_names_in(source) == [], module


def test_the_readme_framework_table_is_the_declarations():
    readme = (REPO_ROOT / "README.md").read_text()
    header = "| framework | compile | attn_backend | precision | optimizer | blas (first = auto) |"
    lines = readme[readme.index(header) :].splitlines()[2:5]
    keys = ("compile", "attn_backend", "precision", "optimizer", "blas")
    expected = [
        f"| {name} | " + " | ".join(", ".join(framework_support(name).values(key)) for key in keys) + " |"
        for name in ("torch", "jax", "numpy")
    ]
    assert lines == expected


def test_fake_trainer_learns_and_reports_no_phase_split(tokens, tiny):
    cfg = build_config(tiny | {"learning_rate": 1e-2, "grad_accum": 2})
    trainer = FakeTrainer(cfg)
    result = measure(
        trainer, trainer.make_batches(tokens, 62), grad_accum=2, warmup_steps=0, measure_steps=30, measure_seconds=0
    )
    assert result["loss_first"] == pytest.approx(6.24, abs=0.01)  # ln(512): near-zero logits guess uniformly
    assert result["loss_last"] < result["loss_first"] - 0.7
    assert [result[k] for k in ("forward_s", "forward_std_s", "backward_s", "optimizer_s")] == [None] * 4
    assert result["phase_split"] == PHASES_FUSED
    assert result["timing_method"].startswith("time.perf_counter around each fused training step")
    assert len(result["step_times_s"]) == 30 and result["step_time_median_s"] > 0


def test_a_fused_framework_runs_through_the_real_worker_without_torch():
    assignments = [f"{k}={v}" for k, v in (TINY | {"learning_rate": 0.01}).items()]
    done = subprocess.run(
        [sys.executable, "bench.py", "trial", "framework=fake", *assignments, "--json"],
        cwd=REPO_ROOT,
        env=os.environ | {"BENCH_TRAINERS": FAKE, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)
    # FakeTrainer.facts() fails the trial if torch was loaded in the worker, so "ok" also means: no torch
    assert (row["status"], row["error"], row["framework"]) == ("ok", None, "fake")
    assert "torch_version" not in row and "torch_threads" not in row
    assert row["loss_last"] < row["loss_first"]
    assert [row[k] for k in ("forward_s", "backward_s", "optimizer_s")] == [None, None, None]
    assert row["phase_split"] == PHASES_FUSED
    assert row["step_time_median_s"] > 0 and row["measure_steps_run"] == 3
    assert row["mfu"] == pytest.approx(row["achieved_gflops"] / row["peak_gflops_fp32"]) and row["mfu"] > 0
    assert row["peak_method"].startswith("best GFLOP/s of np.matmul float32") and row["peak_cached"] is False
    assert row["params"] == 2 * 512 * 64  # the fake's own two tables, not the configured GPT
    assert row["blas_used"] in ("openblas", "mkl", "blis")
    assert row["thread_pools"]["openblas"] == row["threads"]  # read back in the worker
    assert json.loads(row["env"])["BENCH_TRAINERS"] == FAKE  # the row says which module the framework came from
    assert unknown_columns(row) == []
