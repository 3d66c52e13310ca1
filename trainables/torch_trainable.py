"""The PyTorch training step, split into the three phases the timing protocol times apart."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from trainables.config import TrialConfig
from trainables.torch_model import GPT


def configure_threads(threads: int, interop_threads: int) -> None:
    """Must run before any parallel torch work: inter-op threads cannot be changed once used."""
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(interop_threads)
    except RuntimeError:
        pass  # already initialised in this process (tests that train in-process); the worker sets it first


class TorchTrainer:
    def __init__(self, cfg: TrialConfig):
        self.cfg = cfg
        torch.manual_seed(cfg.seed)
        model = GPT(cfg)
        if cfg.precision == "bf16":
            model = model.to(torch.bfloat16)
        model.train()
        self.model = model
        self.params = model.num_params()
        # fused AdamW: one kernel over all parameters instead of a chain of element-wise ops
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=0.1, fused=True)
        self.forward_fn = torch.compile(model) if cfg.compile == "inductor" else model
        if cfg.precision == "mixed":
            self.autocast = lambda: torch.autocast(device_type="cpu", dtype=torch.bfloat16)
        else:
            self.autocast = contextlib.nullcontext

    def make_batches(self, tokens: np.ndarray, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Deterministic random windows of the token stream, prepared before the timed region."""
        rng = np.random.default_rng(self.cfg.seed)
        seq, batch = self.cfg.seq_len, self.cfg.batch_size
        if len(tokens) < seq + 2:
            raise ValueError(f"the corpus has {len(tokens)} tokens, fewer than seq_len={seq} + 1")
        batches = []
        for _ in range(count):
            starts = rng.integers(0, len(tokens) - seq - 1, size=batch)
            rows = np.stack([tokens[s : s + seq + 1] for s in starts]).astype(np.int64)
            data = torch.from_numpy(rows)
            batches.append((data[:, :-1].contiguous(), data[:, 1:].contiguous()))
        return batches

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            loss = self.forward_fn(inputs, targets)
        return loss / self.cfg.grad_accum

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def optimizer_step(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict[str, torch.Tensor]:
        # lm_head shares wte's weight; safetensors refuses shared storage, so keep one copy
        return {k: v.detach().contiguous() for k, v in self.model.state_dict().items() if k != "lm_head.weight"}
