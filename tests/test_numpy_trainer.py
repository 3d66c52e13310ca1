"""The NumPy trainer's hand-written backward and AdamW compute torch's training, axis by axis, without torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import threadpoolctl

from tests.conftest import REPO_ROOT
from trainables.config import build_config
from trainables.numpy_backend import trainer as numpy_trainable
from trainables.timing import StepTimes, measure, run_step
from trainables.trainer import load_trainer

NumpyTrainer = load_trainer("numpy")
SMALL = dict(depth=2, width=64, heads=4, seq_len=32, batch_size=2, vocab_size=512, dataset="offline")
# every axis the model implements apart from torch: GQA and MQA, local and sliding attention, the three activations,
# two MLP widths, a head_dim that is not width / heads, and gradient accumulation
AXES = [
    {},
    {"kv_heads": 2, "mlp_ratio": 2},
    {"kv_heads": 1, "attention": "local", "window": 8, "activation": "relu"},
    {"attention": "sliding", "window": 8, "activation": "silu", "mlp_ratio": 3},
    {"head_dim": 24, "kv_heads": 2, "activation": "silu"},
    {"grad_accum": 2, "attention": "local", "window": 16, "kv_heads": 2},
]


def numpy_and_torch(values: dict):
    torch_trainer = load_trainer("torch")  # imported here: the module must not need torch to be imported
    numpy_cfg = build_config(SMALL | values)
    torch_cfg = build_config(SMALL | values | {"framework": "torch", "attn_backend": "manual"})
    return NumpyTrainer(numpy_cfg), torch_trainer(torch_cfg)


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


@pytest.mark.parametrize("axes", AXES, ids=lambda axes: ",".join(f"{k}={v}" for k, v in axes.items()) or "default")
def test_loss_and_every_gradient_match_torch(tokens, axes):
    ours, reference = numpy_and_torch(axes)
    inputs, targets = ours.make_batches(tokens, 1)[0]
    loss, grads = ours.parameter_gradients(inputs, targets)
    torch_loss, torch_grads = reference.parameter_gradients(inputs, targets)
    assert loss == pytest.approx(torch_loss, rel=1e-5)
    assert grads.keys() == torch_grads.keys() == ours.current_weights().keys()
    assert ours.params == sum(g.size for g in torch_grads.values())
    for name, reference_grad in torch_grads.items():
        assert grads[name].dtype == np.float32 and grads[name].shape == reference_grad.shape, name
        assert relative_error(grads[name], reference_grad) < 1e-4, name


def test_five_steps_follow_torchs_losses(tokens):
    ours, reference = numpy_and_torch({"grad_accum": 2, "kv_heads": 2, "learning_rate": 0.01})
    batches = ours.make_batches(tokens, 10)
    torch_batches = reference.make_batches(tokens, 10)
    torch_times = StepTimes()
    for step in range(5):
        loss = ours.step(batches[2 * step : 2 * step + 2])
        run_step(reference, torch_batches[2 * step : 2 * step + 2], torch_times)  # as the timing protocol runs torch
        assert loss == pytest.approx(float(torch_times.losses[-1]), rel=1e-3), step
    assert ours.current_weights()["wte.weight"].dtype == np.float32


def test_parameter_gradients_change_no_state(tokens):
    """Not the weights, the optimizer or dropout's generator: the next step is that of an untouched trainer."""
    cfg = build_config(SMALL | {"dropout": 0.1})
    probed, untouched = NumpyTrainer(cfg), NumpyTrainer(cfg)
    batches = probed.make_batches(tokens, 2)
    first = probed.parameter_gradients(*batches[0])
    assert probed.parameter_gradients(*batches[0])[0] == first[0]
    assert probed.step(batches[1:]) == untouched.step(batches[1:])
    for name, weight in untouched.current_weights().items():
        assert np.array_equal(probed.current_weights()[name], weight), name


def train(tokens, values: dict, steps: int) -> dict:
    cfg = build_config(SMALL | {"batch_size": 4, "learning_rate": 3e-3} | values)
    trainer = NumpyTrainer(cfg)
    batches = trainer.make_batches(tokens, steps + 1)
    return measure(trainer, batches, grad_accum=1, warmup_steps=0, measure_steps=steps, measure_seconds=0)


def test_loss_falls(tokens):
    result = train(tokens, {}, steps=20)
    assert result["loss_first"] == pytest.approx(np.log(512), abs=0.1)  # an untrained model guesses uniformly
    assert result["loss_last"] < result["loss_first"] - 0.5
    assert result["phase_split"].startswith("fused") and result["forward_s"] is None


def test_dropout_trains_and_changes_the_losses(tokens):
    """Dropout's masks come from NumPy's generator, so they cannot match torch's: here it only has to train, be
    reproducible per seed and change the numbers."""
    plain = train(tokens, {}, steps=20)
    dropped = train(tokens, {"dropout": 0.1}, steps=20)
    assert dropped["loss_last"] < dropped["loss_first"] - 0.5
    assert dropped["loss_first"] != pytest.approx(plain["loss_first"], abs=1e-4)
    assert train(tokens, {"dropout": 0.1}, steps=3)["loss_first"] == dropped["loss_first"]  # the seed's masks


def test_save_writes_torch_names_and_layout(tokens, tmp_path):
    from safetensors.numpy import load_file

    trainer = NumpyTrainer(build_config(SMALL | {"kv_heads": 2}))
    trainer.step(trainer.make_batches(tokens, 1))
    trainer.save(tmp_path)
    saved = load_file(str(tmp_path / "model.safetensors"))
    weights = trainer.current_weights()
    assert saved.keys() == weights.keys()
    assert saved["blocks.0.attn.qkv.weight"].shape == ((4 + 2 * 2) * 16, 64)  # (out, in), q | k | v stacked
    assert all(np.array_equal(saved[name], weights[name]) for name in weights)


def test_a_blas_pool_with_other_threads_fails_the_trial():
    running = max(pool["num_threads"] for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas")
    trainer = NumpyTrainer(build_config(SMALL | {"threads": running + 1}))
    with pytest.raises(RuntimeError, match=f"threads={running + 1} did not take: BLAS thread pools run"):
        trainer.facts()


def test_matmul_peak_is_np_matmuls_and_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(numpy_trainable, "MATMUL_SIZES", (64, 128))  # the protocol, on sizes that take milliseconds
    trainer = NumpyTrainer(build_config(SMALL))
    first = trainer.matmul_peak(1, tmp_path)
    assert first["peak_gflops"] == first["peak_gflops_fp32"] > 0
    assert (first["peak_dtype"], first["matmul_library"]) == ("fp32", "openblas (sgemm)")
    assert first["peak_method"].startswith("best GFLOP/s of np.matmul float32") and not first["peak_cached"]
    again = trainer.matmul_peak(1, tmp_path)
    stored = "not cached" not in first["peak_method"]  # a measurement disturbed on every try is not stored
    assert again["peak_cached"] == stored and (again["peak_gflops"] == first["peak_gflops"]) == stored


WORKER_LIKE = """
import json, sys
from pathlib import Path
from trainables.config import build_config
from trainables.dataset import prepare_tokens
from trainables.trainer import load_trainer
trainer_class = load_trainer("numpy")
trainer_class.configure_threads(1, 1)
cfg = build_config(json.loads(sys.argv[1]))
trainer = trainer_class(cfg)
batches = trainer.make_batches(prepare_tokens("offline", cfg.vocab_size, Path(sys.argv[2]))[0], 2)
losses = [trainer.step(batches[:1]), trainer.step(batches[1:])]
print(json.dumps({"facts": trainer.facts(), "losses": losses, "torch_loaded": "torch" in sys.modules}))
"""


def test_a_numpy_trial_runs_on_the_trials_threads_without_torch(data_dir):
    config = SMALL | {"threads": 1}
    done = subprocess.run(
        [sys.executable, "-c", WORKER_LIKE, json.dumps(config), str(data_dir)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["torch_loaded"] is False
    facts = result["facts"]
    assert facts["blas_used"] == "openblas" and facts["blas_detail"].startswith("openblas ")
    assert facts["thread_pools"]["openblas"] == 1 and all(n == 1 for n in facts["thread_pools"].values())
    assert facts["numpy_version"] == np.__version__
    assert all(np.isfinite(result["losses"]))
