"""The jax trainer computes torch's model: loss and every gradient per matmul backend, training steps, AdamW, threads.

XLA reads XLA_FLAGS once, when jax starts, so everything jax runs in a fresh subprocess with the backend's
environment (trainables/jax_backend/environment.py): `python -m tests.test_jax_trainer SCENARIO BLAS OUT`. The subprocesses start
together (module fixture) and the tests compare what they wrote with torch, computed here. No subprocess may load torch:
a framework=jax worker must not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO_ROOT
from trainables.config import build_config
from trainables.jax_backend.environment import framework_environment

TINY_JAX = dict(depth=2, width=64, heads=4, seq_len=32, batch_size=4, vocab_size=512, dataset="offline")
# every model axis the frameworks implement apart, across three configs
PARITY_CONFIGS = {
    "local-manual": dict(
        kv_heads=2, attention="local", window=8, activation="relu", mlp_ratio=2, head_dim=24, attn_backend="manual"
    ),
    "sliding-sdpa": dict(
        kv_heads=2, attention="sliding", window=8, activation="silu", head_dim=12, attn_backend="sdpa"
    ),
    "full-mqa-sdpa": dict(kv_heads=1, activation="gelu", grad_accum=2, attn_backend="sdpa"),
}
BACKENDS = ("eigen", "ynnpack", "onednn")
TRAIN = TINY_JAX | {"learning_rate": 1e-2}
TRAIN_STEPS, COMPARED_STEPS, EAGER_STEPS = 20, 5, 3
TIMEOUT_S = 240


def jax_config(values: dict, **changes):
    return build_config(values | {"framework": "jax"} | changes)


def torch_config(values: dict):
    return build_config(values | {"framework": "torch"})


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max |want|: one number per tensor, robust to entries near zero."""
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


# ---- what the subprocesses run (jax imported only here) -------------------------------------------------------------
def parity_batch(cfg):
    from trainables.weights import sample_batches

    tokens = np.random.default_rng(1).integers(0, cfg.vocab_size, 4000)
    return sample_batches(tokens, cfg, 1)[0]


def scenario_gradients(blas: str, out: dict, tokens) -> None:
    from trainables.jax_backend.trainer import JaxTrainer

    for name, values in PARITY_CONFIGS.items():
        cfg = jax_config(TINY_JAX | values, blas=blas)
        trainer = JaxTrainer(cfg)
        loss, grads = trainer.parameter_gradients(*parity_batch(cfg))
        out["json"][f"loss {name}"] = loss
        out["json"][f"facts {name}"] = trainer.facts()
        out |= {f"{name}|{key}": grad for key, grad in grads.items()}


def train(cfg, tokens, steps: int) -> tuple[list[float], object]:
    from trainables.jax_backend.trainer import JaxTrainer

    trainer = JaxTrainer(cfg)
    batches = trainer.make_batches(tokens, 8)
    losses = [trainer.loss_value(trainer.step([batches[s % len(batches)]])) for s in range(steps)]
    return losses, trainer


def scenario_train(blas: str, out: dict, tokens) -> None:
    import optax

    from trainables.jax_backend.trainer import JaxTrainer

    losses, trainer = train(jax_config(TRAIN, blas=blas), tokens, TRAIN_STEPS)
    out["json"]["jit losses"] = losses
    eager_losses, eager = train(jax_config(TRAIN, blas=blas, compile="eager"), tokens, EAGER_STEPS)
    out["json"]["eager losses"] = eager_losses
    jit_weights = train(jax_config(TRAIN, blas=blas), tokens, EAGER_STEPS)[1].current_weights()
    eager_weights = eager.current_weights()
    out["json"]["eager vs jit weights"] = max(relative_error(eager_weights[k], w) for k, w in jit_weights.items())
    out["json"]["bf16 losses"] = train(jax_config(TRAIN, blas=blas, precision="bf16"), tokens, TRAIN_STEPS)[0]
    out["json"]["dropout losses"] = train(
        jax_config(TRAIN, blas=blas, dropout=0.1, attn_backend="manual"), tokens, TRAIN_STEPS
    )[0]
    try:
        JaxTrainer(jax_config(TRAIN, dropout=0.1, attn_backend="sdpa"))
    except ValueError as exc:
        out["json"]["sdpa dropout error"] = str(exc)
    trainer.save(Path(out["json"]["folder"]))
    out |= {f"weights|{key}": w for key, w in trainer.current_weights().items()}
    # optax.adamw as the trainer builds it, three updates of the same random weights and gradients as torch's test
    optimizer, weights, grads = adamw_case(optax)
    state = optimizer.init(weights)
    for _ in range(3):
        updates, state = optimizer.update(grads, state, weights)
        weights = optax.apply_updates(weights, updates)
    out["adamw|weights"] = np.asarray(weights)


def adamw_case(optax=None):
    from trainables.weights import ADAMW

    rng = np.random.default_rng(3)
    weights, grads = rng.standard_normal((2, 64, 32), dtype=np.float32)
    grads[0, :4] = 1e-9  # gradients near AdamW's eps, where its placement (outside the sqrt) matters
    if optax is None:
        return weights, grads
    (beta1, beta2), eps, decay = ADAMW["betas"], ADAMW["eps"], ADAMW["weight_decay"]
    return optax.adamw(0.05, b1=beta1, b2=beta2, eps=eps, weight_decay=decay), weights, grads


def scenario_threads(blas: str, out: dict, tokens) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    from trainables.jax_backend.trainer import JaxTrainer

    JaxTrainer.configure_threads(len(cpus), 1)
    try:
        JaxTrainer.configure_threads(len(cpus) + 1, 1)
    except RuntimeError as exc:
        out["json"]["too many threads"] = str(exc)
    _, trainer = train(jax_config(TINY_JAX, threads=len(cpus), blas=blas), tokens, 2)
    out["json"]["facts"] = trainer.facts()
    if len(cpus) == 1:
        out["json"]["peak"] = trainer.matmul_peak(1, Path(out["json"]["folder"]))
    try:
        JaxTrainer(jax_config(TINY_JAX, threads=len(cpus) + 1, blas=blas)).facts()
    except RuntimeError as exc:
        out["json"]["facts with other threads"] = str(exc)


SCENARIOS = {"gradients": scenario_gradients, "train": scenario_train, "threads": scenario_threads}


def main(scenario: str, blas: str, folder: str, cpus: str) -> None:
    if cpus:
        os.sched_setaffinity(0, [int(c) for c in cpus.split(",")])  # before jax starts: XLA sizes its pool from it
    out = {"json": {"folder": folder}}
    SCENARIOS[scenario](blas, out, np.load(Path(folder) / "tokens.npy"))
    out["json"]["torch loaded"] = "torch" in sys.modules
    out["json"] = np.array(json.dumps(out["json"]))
    np.savez(Path(folder) / "result.npz", **out)


# ---- the tests: start every subprocess at once, compare with torch here ---------------------------------------------
@pytest.fixture(scope="module")
def runs(tokens, tmp_path_factory) -> dict:
    cpus = sorted(os.sched_getaffinity(0))
    wanted = [("gradients", blas, "") for blas in BACKENDS] + [("train", "eigen", ""), ("threads", "eigen", "")]
    wanted.append(("threads", "eigen", str(cpus[0])))
    if len(cpus) >= 2:
        wanted.append(("threads", "eigen", f"{cpus[0]},{cpus[1]}"))
    started = {}
    for scenario, blas, pinned in wanted:
        folder = tmp_path_factory.mktemp(f"jax-{scenario}-{blas}")
        np.save(folder / "tokens.npy", tokens)
        env = os.environ | framework_environment(jax_config(TINY_JAX, blas=blas))
        command = [sys.executable, "-m", "tests.test_jax_trainer", scenario, blas, str(folder), pinned]
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stderr=subprocess.PIPE, text=True)
        started[(scenario, blas, len(pinned.split(",")) if pinned else 0)] = (process, folder)
    results = {}
    for key, (process, folder) in started.items():
        _, stderr = process.communicate(timeout=TIMEOUT_S)
        assert process.returncode == 0, f"{key}: {stderr[-3000:]}"
        with np.load(folder / "result.npz") as saved:
            arrays = {name: saved[name] for name in saved.files}
        results[key] = {"json": json.loads(str(arrays.pop("json"))), "arrays": arrays, "folder": folder}
        assert results[key]["json"]["torch loaded"] is False, f"{key}: a jax subprocess loaded torch"
    return results


def torch_trainer(values: dict):
    from trainables.torch_backend.trainer import TorchTrainer

    return TorchTrainer(torch_config(values))


@pytest.mark.parametrize("blas", BACKENDS)
def test_loss_and_every_gradient_match_torch_on_each_backend(runs, blas):
    result = runs[("gradients", blas, 0)]
    for name, values in PARITY_CONFIGS.items():
        cfg = torch_config(TINY_JAX | values)
        loss, grads = torch_trainer(TINY_JAX | values).parameter_gradients(*parity_batch(cfg))
        assert result["json"][f"loss {name}"] == pytest.approx(loss, rel=1e-4), name
        jax_grads = {k.split("|", 1)[1]: v for k, v in result["arrays"].items() if k.startswith(name + "|")}
        assert set(jax_grads) == set(grads), name
        errors = {key: relative_error(jax_grads[key], grad) for key, grad in grads.items()}
        assert max(errors.values()) < 1e-4, (name, max(errors.items(), key=lambda item: item[1]))
        facts = result["json"][f"facts {name}"]
        # read back from the compiled step's optimized HLO: with eigen every dot is XLA's own; ynnpack and onednn
        # take the dots their fusion passes match, which must be most of them (XLA may leave some to Eigen)
        dots = facts["xla_dots"]
        assert facts["blas_used"] == "+".join(dots) and next(iter(dots)) == blas, dots
        assert set(dots) == {"eigen"} if blas == "eigen" else dots[blas] > sum(dots.values()) / 2, dots
        assert facts["xla_dots_source"] == "optimized HLO of the compiled train step"


def test_training_steps_match_torch_and_learn(runs, tokens):
    result = runs[("train", "eigen", 0)]["json"]
    trainer = torch_trainer(TRAIN)
    batches = trainer.make_batches(tokens, 8)
    torch_losses = []
    for step in range(COMPARED_STEPS):
        inputs, targets = batches[step]
        loss = trainer.forward(inputs, targets)
        trainer.backward(loss)
        trainer.optimizer_step()
        torch_losses.append(trainer.loss_value(loss))
    assert result["jit losses"][:COMPARED_STEPS] == pytest.approx(torch_losses, rel=1e-3)
    assert result["jit losses"][0] == pytest.approx(np.log(512), abs=0.1)  # untrained: a uniform guess
    assert np.mean(result["jit losses"][-5:]) < result["jit losses"][0] - 0.7


def test_eager_bf16_and_dropout_train(runs):
    result = runs[("train", "eigen", 0)]["json"]
    assert result["eager losses"] == pytest.approx(result["jit losses"][:EAGER_STEPS], rel=1e-5)
    # AdamW scales every update to about lr whatever the gradient's size, so float rounding in gradients near zero
    # (eager and jit round differently) moves weights by more than it moves the loss: 2.5e-4 measured after 3 steps
    assert result["eager vs jit weights"] < 1e-3
    assert result["bf16 losses"][0] == pytest.approx(result["jit losses"][0], rel=1e-2)
    # lr 1e-2 on batches of 4 is jumpy (a single step may spike): the mean of the last five steps must be lower
    for run in ("bf16 losses", "dropout losses"):
        assert np.mean(result[run][-5:]) < result[run][0] - 0.5, (run, result[run])
    assert "jax.nn.dot_product_attention has no attention dropout" in result["sdpa dropout error"]


def test_three_adamw_updates_are_torchs(runs):
    import torch

    from trainables.weights import ADAMW

    weights, grads = adamw_case()
    parameter = torch.nn.Parameter(torch.from_numpy(weights.copy()))
    optimizer = torch.optim.AdamW([parameter], lr=0.05, **ADAMW)
    for _ in range(3):
        parameter.grad = torch.from_numpy(grads)
        optimizer.step()
    run = runs[("train", "eigen", 0)]
    np.testing.assert_allclose(run["arrays"]["adamw|weights"], parameter.detach().numpy(), rtol=0, atol=2e-6)


def test_saved_weights_are_torch_names_and_layout(runs):
    from safetensors.numpy import load_file

    result = runs[("train", "eigen", 0)]
    saved = load_file(str(result["folder"] / "model.safetensors"))
    weights = {k.split("|", 1)[1]: v for k, v in result["arrays"].items() if k.startswith("weights|")}
    assert set(saved) == set(weights) and "lm_head.weight" not in saved
    for name, array in weights.items():
        np.testing.assert_array_equal(saved[name], array)
    assert saved["blocks.0.attn.qkv.weight"].shape == ((4 + 2 * 4) * 16, 64)  # ((nh + 2 nkv) hs, C), PyTorch's


def test_facts_read_back_xla_pool_and_refuse_other_thread_counts(runs):
    cpus = len(os.sched_getaffinity(0))
    for pinned in (1, 2) if cpus >= 2 else (1,):
        result = runs[("threads", "eigen", pinned)]["json"]
        assert result["facts"]["thread_pools"] == {"xla_eigen": pinned}
        # configure_threads runs before jax's CPU client starts, as in the worker: the pool it will start
        assert f"XLA's CPU pool will start {pinned} tf_XLAEigen threads" in result["too many threads"]
        assert f"XLA's CPU pool ran {pinned} tf_XLAEigen threads" in result["facts with other threads"]
    unpinned = runs[("threads", "eigen", 0)]["json"]["facts"]
    assert unpinned["thread_pools"] == {"xla_eigen": cpus}
    assert set(unpinned) >= {"jax_version", "jaxlib_version", "xla_flags", "blas_used", "thread_pools", "jax_backend"}
    assert unpinned["xla_flags"] == "--xla_cpu_experimental_ynn_fusion_type="


def test_matmul_peak_is_jnp_dot_on_the_trials_backend(runs):
    peak = runs[("threads", "eigen", 1)]["json"]["peak"]
    assert peak["peak_gflops"] > 0 and peak["peak_gflops_fp32"] == peak["peak_gflops"]
    assert (peak["peak_dtype"], peak["peak_cached"], peak["matmul_library"]) == ("fp32", False, "xla eigen (dot)")
    assert peak["peak_method"].startswith("best GFLOP/s of jnp.dot under jax.jit float32")


if __name__ == "__main__":
    main(*sys.argv[1:5])
