"""The memory-traffic model of one optimizer step (trainables/traffic.py) against counts made by hand."""

import pytest

from trainables.config import TrialConfig
from trainables.traffic import StepTraffic, step_traffic

# Built without validation: its vocab floor (256) is the tokenizer's, the arithmetic does not care, and 16 keeps the
# hand count short. n = 4 tokens, C = A = K = 8 (2 heads of 4), H = 32, V = 16, T = 4; fp32, so 4 bytes an element.
HAND = TrialConfig(
    framework="torch",
    depth=1,
    width=8,
    heads=2,
    head_dim=4,
    kv_heads=2,
    seq_len=4,
    batch_size=1,
    vocab_size=16,
    attn_backend="sdpa",
    compile="eager",
)
n, C, H, V, T, QKV = 4, 8, 32, 16, 4, 24  # QKV: qkv's output width, A + 2K


def linear(fan_in, fan_out):
    """(forward, backward) elements of one Linear: forward reads x and W, writes y; backward dx reads dy and W,
    writes dx; dW reads dy and x, writes dW."""
    x, y, w = n * fan_in, n * fan_out, fan_in * fan_out
    return x + w + y, (y + w + x) + (y + x + w)


def test_step_traffic_is_the_hand_count_fp32_flash():
    layer_norm = (2 * n * C + 2 * n, 3 * n * C + 2 * n + 2 * C)  # read x, write y, mean, rstd / read dy, x, stats...
    residual = (3 * n * C, 3 * n * C)  # read both, write the sum / sum the two gradients at the block input
    flash = (n * QKV + n * C + 2 * 1 * 4, n * QKV + 2 * n * C + 2 * 4 + n * QKV)  # q,k,v, out, logsumexp (N*nh*L)
    activation = (2 * n * H, 3 * n * H)
    embedding = ((n + T) * C * 2 + (n + T) * C + n * C, n * C + T * C + V * C + 3 * n * C)
    loss = (2 * n * V, 4 * n * V)  # log_softmax r+w / nll' writes, log_softmax' reads 2, writes 1
    tied_sum = 3 * V * C  # lm_head's and the embedding's gradients of the tied weight, added
    matmuls = [linear(C, QKV), linear(C, C), linear(C, H), linear(H, C), linear(C, V), flash]
    elementwise = [embedding, layer_norm, residual, layer_norm, activation, residual, layer_norm, loss]
    assert [sum(f for f, _ in matmuls), sum(b for _, b in matmuls)] == [1640, 3272]
    assert [sum(f for f, _ in elementwise), sum(b for _, b in elementwise)] == [1016, 1480]
    params = V * C + T * C + 2 * 2 * C + QKV * C + C * C + H * C + C * H + 2 * C  # 976
    expected = StepTraffic(
        matmul_bytes=4 * (1640 + 3272 + tied_sum),
        attention_bytes=0.0,  # the flash kernel keeps its scores in cache
        elementwise_bytes=4 * (1016 + 1480),
        optimizer_bytes=4 * 7 * params,  # AdamW: read param, grad, exp_avg, exp_avg_sq; write param and both
        forward_bytes=4 * (1640 + 1016),
        backward_bytes=4 * (3272 + tied_sum + 1480),
    )
    got = step_traffic(HAND)
    assert got == expected
    assert got.total_bytes == 58496 == got.matmul_bytes + got.attention_bytes + got.elementwise_bytes + 27328


def test_manual_attention_writes_and_rereads_the_scores():
    # S = N * nh * L * L = 1 * 2 * 4 * 4 = 32 scores. Forward: write, scale r+w, masked_fill r+w, softmax r+w, p.v
    # reads: 7 S; backward: write dP, dV reads P, softmax' 3, masked_fill' 2, scale' 2, dQ and dK read: 10 S
    manual = step_traffic(HAND.replace(attn_backend="manual"))
    assert manual.attention_bytes == 4 * (7 + 10) * 32
    # q.k and p.v read q, k, v and write out (4 x n*A), backward 8 x n*A, against flash's q,k,v / out / logsumexp
    flash_matmul = (n * QKV + n * C + 8) + (2 * n * QKV + 2 * n * C + 8)
    assert manual.matmul_bytes == step_traffic(HAND).matmul_bytes + 4 * (12 * n * C - flash_matmul)
    # inductor fuses scale, mask and softmax: the scores written once, the probabilities once (4 S, 7 S)
    fused = step_traffic(HAND.replace(attn_backend="manual", compile="inductor"))
    assert fused.attention_bytes == 4 * (4 + 7) * 32


def test_micro_batches_and_accumulation():
    one, two = step_traffic(HAND), step_traffic(HAND.replace(grad_accum=2))
    linear_weights = QKV * C + C * C + 2 * H * C + V * C  # the blocks' Linears and the tied wte/lm_head: 768
    other = 976 - linear_weights  # layer norms and wpe: 208
    # the second micro-batch repeats the first, then adds its gradients in: read both, write the sum
    assert two.matmul_bytes == 2 * one.matmul_bytes + 3 * 4 * linear_weights
    assert two.elementwise_bytes == 2 * one.elementwise_bytes + 3 * 4 * other
    assert two.forward_bytes == 2 * one.forward_bytes
    assert two.optimizer_bytes == one.optimizer_bytes


@pytest.mark.parametrize(("optimizer", "passes"), [("adamw", 7), ("sgd", 11), ("lookahead", 8), ("lamb", 28)])
def test_optimizer_passes(optimizer, passes):
    assert step_traffic(HAND.replace(optimizer=optimizer)).optimizer_bytes == pytest.approx(4 * passes * 976)


def test_bf16_halves_everything_but_the_loss():
    fp32, bf16 = step_traffic(HAND), step_traffic(HAND.replace(precision="bf16"))
    assert bf16.optimizer_bytes == fp32.optimizer_bytes / 2
    logsumexp = 2 * 8 * 4  # flash's logsumexp stays fp32: written forward, read backward, 8 elements
    assert bf16.matmul_bytes == (fp32.matmul_bytes - logsumexp) / 2 + logsumexp
    # the loss stays fp32 (2 + 4 passes over n*V at 4 bytes) and gains the casts to and from it (2 + 4 bytes each)
    loss = 6 * n * V * 4
    assert bf16.elementwise_bytes == (fp32.elementwise_bytes - loss) / 2 + loss + 2 * n * V * (2 + 4)


def test_frozen_blocks_move_no_gradients_or_state():
    cfg = HAND.replace(depth=2, freeze_layers=1)
    trained, frozen = step_traffic(cfg.replace(freeze_layers=0)), step_traffic(cfg)
    block_linear = QKV * C + C * C + 2 * H * C  # 640 weights without a gradient
    dw = (n * QKV + n * C + QKV * C) + (n * C + n * C + C * C) + (n * H + n * C + H * C) + (n * C + n * H + C * H)
    assert trained.matmul_bytes - frozen.matmul_bytes == 4 * dw
    assert trained.optimizer_bytes - frozen.optimizer_bytes == 4 * 7 * (block_linear + 4 * C)
