"""trainables/memory.py: the training-memory estimate's arithmetic, the refusal message, and its activation count
checked tensor by tensor against what autograd really saves (tiny models, no trials: benchmarks/memory_estimate.py
compares the total with real workers' peak RSS)."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from trainables.activation_memory import saved_activation_bytes
from trainables.config import build_config
from trainables.memory import (
    GIB,
    MIB,
    SAFETY_FRACTION,
    available_memory_bytes,
    estimate_mb,
    estimate_training_memory,
    memory_unsupported_reason,
    parameter_counts,
)
from trainables.weights import parameter_shapes

BASE = {"dataset": "offline"}  # the quick baseline: depth 4, width 256, heads 4, seq 256, batch 1
MODEL = {"depth": 6, "width": 128, "heads": 4, "seq_len": 128, "batch_size": 2, "dataset": "offline"}


def cfg_of(**values):
    return build_config(MODEL | values)


def params_of(cfg) -> int:
    return sum(math.prod(shape) for shape in parameter_shapes(cfg).values())


@pytest.mark.parametrize("precision", ["fp32", "mixed", "q8", "bitnet"])
def test_weights_are_four_bytes_per_parameter_where_fp32_weights_are_kept(precision):
    cfg = cfg_of(precision=precision)
    assert estimate_training_memory(cfg)["weights"] == 4 * params_of(cfg)


def test_bf16_halves_weights_gradients_and_optimizer_state():
    fp32, bf16 = estimate_training_memory(cfg_of()), estimate_training_memory(cfg_of(precision="bf16"))
    for part in ("weights", "gradients", "optimizer_state"):
        assert bf16[part] * 2 == fp32[part]
    assert bf16["activations"] < fp32["activations"]


def test_freezing_removes_exactly_the_frozen_blocks_gradients_and_optimizer_state():
    cfg = cfg_of()
    block = sum(math.prod(s) for name, s in parameter_shapes(cfg).items() if name.startswith("blocks.0."))
    assert parameter_counts(cfg)["block"] == block
    whole, frozen = estimate_training_memory(cfg), estimate_training_memory(cfg_of(freeze_layers=4))
    assert frozen["weights"] == whole["weights"]
    assert whole["gradients"] - frozen["gradients"] == 4 * block * 4
    assert whole["optimizer_state"] - frozen["optimizer_state"] == 2 * 4 * block * 4  # AdamW: two moments
    assert whole["gradients"] == 4 * params_of(cfg)


def test_optimizers_order_by_state_they_keep():
    state = {opt: estimate_training_memory(cfg_of(optimizer=opt)) for opt in ("sgd", "adamw", "lookahead", "lamb")}
    weights = state["adamw"]["weights"]
    assert state["sgd"]["optimizer_state"] == weights  # momentum
    assert state["adamw"]["optimizer_state"] == 2 * weights  # exp_avg, exp_avg_sq
    assert state["lookahead"]["optimizer_state"] == 3 * weights  # + the slow weights
    assert state["lamb"]["optimizer_state"] == 2 * weights
    assert state["lamb"]["optimizer_transient"] == weights  # its foreach step's temporaries, after backward
    assert state["sgd"]["total"] < state["adamw"]["total"] < state["lookahead"]["total"]


def test_total_is_runtime_plus_the_larger_of_training_and_building():
    parts = estimate_training_memory(cfg_of())
    training = sum(parts[k] for k in ("weights", "buffers", "gradients", "optimizer_state", "activations"))
    training += parts["allocator_slack"]
    assert parts["optimizer_transient"] == 0  # AdamW
    assert parts["total"] == parts["runtime"] + max(training, parts["build_peak"])
    assert parts["build_peak"] == 2 * 4 * params_of(cfg_of())
    assert estimate_mb(cfg_of()) == parts["total"] / MIB


@pytest.mark.parametrize("extra", [{}, {"attn_backend": "manual"}, {"attention": "local", "window": 32}])
def test_activations_grow_linearly_in_batch_size(extra):
    one, two, four = (estimate_training_memory(cfg_of(batch_size=b, **extra))["activations"] for b in (1, 2, 4))
    per_sequence = two - one
    assert four - two == 2 * per_sequence
    # what does not grow with the batch: the position ids, nll_loss's scalar and manual's inverted masks (bytes)
    assert 0 < one - per_sequence < 0.01 * per_sequence


def test_mixed_precision_activations_are_affine_in_batch_size():
    # autocast's bf16 weight copies do not grow with the batch
    one, two, three = (
        estimate_training_memory(cfg_of(batch_size=b, precision="mixed"))["activations"] for b in (1, 2, 3)
    )
    assert three - two == two - one > 0
    assert one > two - one


def test_manual_attention_adds_terms_quadratic_in_seq_len():
    def manual_part(seq_len):
        manual = estimate_training_memory(cfg_of(seq_len=seq_len, attn_backend="manual"))["activations"]
        return manual - estimate_training_memory(cfg_of(seq_len=seq_len))["activations"]

    assert manual_part(128) > 0
    assert manual_part(256) > 3 * manual_part(128)  # mostly the (B, heads, T, T) softmax output
    sdpa = [estimate_training_memory(cfg_of(seq_len=t))["activations"] for t in (128, 256)]
    assert sdpa[1] == pytest.approx(2 * sdpa[0], rel=1e-3)  # the CPU flash kernel keeps no T x T scores


def test_local_attention_scores_grow_linearly_in_seq_len():
    parts = [
        estimate_training_memory(cfg_of(seq_len=t, attention="local", window=32, attn_backend="manual"))
        for t in (128, 256)
    ]
    assert parts[1]["activations"] == pytest.approx(2 * parts[0]["activations"], rel=1e-3)


def write_meminfo(tmp_path, available_kb: int | None, free_kb: int = 1024):
    lines = ["MemTotal:       16384000 kB", f"MemFree:        {free_kb} kB"]
    if available_kb is not None:
        lines.append(f"MemAvailable:   {available_kb} kB")
    path = tmp_path / "meminfo"
    path.write_text("\n".join(lines + ["Buffers:          12345 kB"]) + "\n")
    return path


def test_available_memory_reads_memavailable_or_falls_back_to_memfree(tmp_path):
    assert available_memory_bytes(write_meminfo(tmp_path, 8 * 2**20)) == 8 * GIB
    assert available_memory_bytes(write_meminfo(tmp_path, None, free_kb=2**20)) == GIB
    assert available_memory_bytes() > 0  # this machine's /proc/meminfo


def test_xl_is_refused_on_an_8_gib_node_with_what_it_needs(tmp_path):
    available = available_memory_bytes(write_meminfo(tmp_path, 8 * 2**20))
    xl = build_config({"model": "xl", "dataset": "offline"})
    reason = memory_unsupported_reason(xl, available)
    parts = estimate_training_memory(xl)
    assert reason is not None
    assert reason.startswith("model=xl (batch_size=1, seq_len=256) needs about ")
    assert f"needs about {parts['total'] / GIB:.1f} GiB to train" in reason
    assert f"weights {parts['weights'] / GIB:.1f}, gradients {parts['gradients'] / GIB:.1f}, AdamW state" in reason
    assert "estimated by trainables/memory.py" in reason
    assert "this node has 8.0 GiB available" in reason
    assert parts["total"] > 20 * GIB  # ~1.5 B parameters, 16 bytes each with AdamW


def test_the_quick_baseline_is_accepted_on_an_8_gib_node(tmp_path):
    available = available_memory_bytes(write_meminfo(tmp_path, 8 * 2**20))
    assert memory_unsupported_reason(build_config(BASE), available) is None


def test_the_safety_margin_refuses_what_fits_only_without_headroom():
    cfg = build_config(BASE)
    total = estimate_training_memory(cfg)["total"]
    assert memory_unsupported_reason(cfg, int(total / SAFETY_FRACTION) + 1) is None
    reason = memory_unsupported_reason(cfg, int(total * 1.05))
    assert reason is not None and "refused above 90%" in reason


def test_the_module_imports_without_torch():
    code = "import sys, trainables.memory; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT).returncode == 0


# what autograd saves, counted by storage, against saved_activation_bytes: exact on every case
SAVED_CASES = [
    {},
    {"attn_backend": "manual"},
    {"attention": "local", "window": 8, "attn_backend": "manual"},
    {"attention": "sliding", "window": 8},
    {"precision": "mixed"},
    {"precision": "bf16", "attn_backend": "manual"},
    {"freeze_layers": 2},
    {"dropout": 0.1, "precision": "mixed"},
    {"activation": "relu", "kv_heads": 2},
    {"precision": "q8"},
    {"precision": "bitnet"},
]


def saved_bytes_measured(cfg) -> int:
    """Bytes of the distinct storages autograd saves in one forward (parameters and buffers left out)."""
    torch = pytest.importorskip("torch")
    from trainables.torch_backend.model import GPT
    from trainables.torch_backend.optimizers import freeze_layers

    torch.manual_seed(0)
    model = GPT(cfg)
    if cfg.precision == "bf16":
        model = model.to(torch.bfloat16)
    if cfg.precision in ("q8", "q4", "bitnet"):
        from trainables.torch_backend.quantization import apply_quantized_training

        apply_quantized_training(model, cfg.precision)
    if cfg.freeze_layers:
        freeze_layers(model, cfg.freeze_layers)

    def storage(t):  # bitnet's weights are tensor subclasses around a plain tensor
        return (t._data if hasattr(t, "_data") else t).untyped_storage()

    kept = {storage(t).data_ptr() for t in [*model.parameters(), *model.buffers()]}
    saved: dict[int, int] = {}

    def pack(t):
        s = storage(t)
        if s.data_ptr() not in kept:
            saved[s.data_ptr()] = s.nbytes()
        return t

    inputs = torch.randint(0, cfg.vocab_size, (cfg.batch_size, cfg.seq_len))
    targets = torch.randint(0, cfg.vocab_size, (cfg.batch_size, cfg.seq_len))
    autocast = torch.autocast("cpu", torch.bfloat16, enabled=cfg.precision == "mixed")
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        model(inputs, targets)
    return sum(saved.values())


@pytest.mark.parametrize("extra", SAVED_CASES, ids=lambda e: ",".join(f"{k}={v}" for k, v in e.items()) or "fp32")
def test_saved_activations_match_what_autograd_saves(extra):
    cfg = build_config(
        {"depth": 3, "width": 64, "heads": 4, "seq_len": 32, "batch_size": 2, "vocab_size": 512} | BASE | extra
    )
    assert saved_activation_bytes(cfg) == saved_bytes_measured(cfg)


def test_gradient_accumulation_counts_a_second_gradient_copy():
    one, two = estimate_training_memory(cfg_of()), estimate_training_memory(cfg_of(grad_accum=2))
    assert two["gradients"] == 2 * one["gradients"]
    assert two["activations"] == one["activations"]  # per micro-batch


def test_glibc_slack_where_gradients_outweigh_activations_and_none_with_jemalloc():
    medium = {"model": "medium", "dataset": "offline"}  # batch 1: gradients 3x the activations
    glibc, jemalloc = (
        estimate_training_memory(build_config(medium | {"allocator": a})) for a in ("default", "jemalloc")
    )
    assert jemalloc["allocator_slack"] == 0
    assert glibc["allocator_slack"] == int(0.8 * glibc["gradients"]) - glibc["activations"]
    assert glibc["total"] - jemalloc["total"] == glibc["allocator_slack"]
    big_batch = estimate_training_memory(build_config(medium | {"batch_size": 8}))
    assert big_batch["allocator_slack"] == 0  # the activations already hold more than the gradients' holes
