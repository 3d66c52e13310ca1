"""The PyTorch trainer: the training step split into the three phases the timing protocol times apart."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch
import torch._dynamo  # noqa: F401 - torch.optim imports it on first use (~0.9 s): the worker counts it as import time

from hwctl.isa import bf16_native_reason
from hwctl.microbench import matmul_library, matmul_peak_gflops
from trainables.config import TrialConfig
from trainables.fused_linear_act import fusion_evidence
from trainables.optimizers import build_optimizer, freeze_layers, optimizer_state_bytes
from trainables.quantization import QUANTIZED, apply_quantized_training
from trainables.torch_model import GPT
from trainables.trainer import Trainer
from trainables.weights import initial_weights, sample_batches


class TorchTrainer(Trainer):
    NAME = "torch"

    @classmethod
    def configure_threads(cls, threads: int, interop_threads: int) -> None:
        """Must run before any parallel torch work: inter-op threads cannot be changed once used. A setting that did
        not take fails the trial with the reason: a row measured with other thread counts than its config is wrong."""
        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(interop_threads)
        except RuntimeError as exc:
            # torch refuses once its inter-op pool exists; that is harmless only if it already has the asked size
            if torch.get_num_interop_threads() != interop_threads:
                raise RuntimeError(
                    f"interop_threads={interop_threads} did not take: torch runs {torch.get_num_interop_threads()} "
                    f"inter-op threads ({exc})"
                ) from exc
        if torch.get_num_threads() != threads:
            raise RuntimeError(f"threads={threads} did not take: torch runs {torch.get_num_threads()} threads")

    def __init__(self, cfg: TrialConfig):
        self.cfg = cfg
        torch.manual_seed(cfg.seed)  # dropout's masks; the weights come from trainables/weights.py
        model = GPT(cfg)
        with torch.no_grad():
            for name, array in initial_weights(cfg).items():
                model.get_parameter(name).copy_(torch.from_numpy(array))
        if cfg.blas == "onednn":
            # the only switch that sends fp32 Linears to oneDNN (ONEDNN_VERBOSE shows it; MKL SGEMM otherwise)
            torch.backends.mkldnn.matmul.fp32_precision = "bf16"
        self.recipe_facts: dict = {}  # what the precision, freezing and optimizer keys really built, read back
        if cfg.precision in QUANTIZED:
            # quantisation-aware training on the fp32 model: fake-quantised Linears, fp32 master weights
            self.recipe_facts |= apply_quantized_training(model, cfg.precision)
        if cfg.precision == "bf16":
            model = model.to(torch.bfloat16)
        model.train()
        self.model = model
        self.params = model.num_params()
        self.matmul_library = None  # read back by matmul_peak, after the timed region
        # before the optimizer: frozen blocks get no gradient and no optimizer state
        self.recipe_facts |= freeze_layers(model, cfg.freeze_layers)
        # adamw is torch's fused AdamW (one kernel over all parameters), as ADAMW in every framework
        self.optimizer, optimizer_facts = build_optimizer(cfg, model)
        self.recipe_facts |= optimizer_facts
        self.forward_fn = torch.compile(model) if cfg.compile == "inductor" else model
        if cfg.precision == "mixed":
            self.autocast = lambda: torch.autocast(device_type="cpu", dtype=torch.bfloat16)
        else:
            self.autocast = contextlib.nullcontext

    def make_batches(self, tokens: np.ndarray, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The same windows of the token stream in every framework (trainables/weights.py), as torch tensors."""
        return [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in sample_batches(tokens, self.cfg, count)]

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            loss = self.forward_fn(inputs, targets)
        return loss / self.cfg.grad_accum

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def optimizer_step(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def detach(self, loss: torch.Tensor) -> torch.Tensor:
        return loss.detach()  # a kept loss must not keep its step's autograd graph alive

    def loss_value(self, loss: torch.Tensor) -> float:
        return float(loss)

    def facts(self) -> dict:
        return {
            "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(),
            "blas_build": _blas_info(),
            "blas_used": _library_families(self.matmul_library) if self.matmul_library else None,
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch_version": torch.__version__,
            # measured after the steps: optimizer state exists from the first step on
            "optimizer_state_mb": optimizer_state_bytes(self.optimizer) / 2**20,
            # the oneDNN primitive that ran one fused up-projection + activation, with its post-op (ONEDNN_VERBOSE)
            "fused_linear_act_kernel": fusion_evidence(self.cfg.activation, self.compute_dtype)
            if self.cfg.fused_linear_act
            else None,
        } | self.recipe_facts

    @property
    def compute_dtype(self) -> str:
        """The dtype the matmuls run in: bf16 weights, or bf16 under autocast (mixed), else fp32."""
        return "bfloat16" if self.cfg.precision in ("bf16", "mixed") else "float32"

    def matmul_peak(self, threads: int, cache_dir: Path) -> dict:
        """The peak MFU divides by, measured in this worker (so under the trial's CPUs, pinning, threads, allocator
        and ISA cap) or read from the figures cached under the same conditions since the sweep began
        (hwctl/microbench.py): bf16's where the trial's matmuls run in bf16 and the CPU does bf16 natively under the
        trial's ISA cap; fp32's otherwise, since without native bf16 the kernels convert and run fp32 FMAs at best."""
        fp32 = matmul_peak_gflops(threads, cache_dir)
        peak, method = fp32, fp32["peak_method"]
        if self.compute_dtype == "bfloat16":
            not_native = bf16_native_reason(self.cfg.isa)
            if not_native:
                method = f"fp32 peak, as bf16 is not native here ({not_native}): {method}"
            else:
                peak = matmul_peak_gflops(threads, cache_dir, "bfloat16")
                method = peak["peak_method"]
        # the MLP's up-projection (the largest Linear but the lm_head) in the dtype its matmul runs in
        shape = (self.cfg.batch_size * self.cfg.seq_len, self.cfg.width, self.cfg.mlp_hidden)
        self.matmul_library = matmul_library(self.compute_dtype, shape, threads, cache_dir)
        return {
            "peak_gflops": peak["peak_gflops"],
            "peak_dtype": "fp32" if peak is fp32 else "bf16",
            "peak_gflops_fp32": fp32["peak_gflops"],
            "peak_method": method,
            "peak_cached": fp32["peak_cached"] and peak["peak_cached"],
            "matmul_library": self.matmul_library,
        }

    def current_weights(self) -> dict[str, np.ndarray]:
        return {name: p.detach().float().numpy().copy() for name, p in self.model.named_parameters()}

    def parameter_gradients(self, inputs, targets) -> tuple[float, dict[str, np.ndarray]]:
        saved = {name: p.grad for name, p in self.model.named_parameters()}
        self.model.zero_grad(set_to_none=True)
        loss = self.forward(torch.as_tensor(inputs), torch.as_tensor(targets))
        loss.backward()
        grads = {name: p.grad.float().numpy().copy() for name, p in self.model.named_parameters()}
        for name, p in self.model.named_parameters():
            p.grad = saved[name]
        return float(loss.detach()), grads

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        save_file(self.state_dict(), str(Path(folder) / "model.safetensors"))

    def state_dict(self) -> dict[str, torch.Tensor]:
        # lm_head shares wte's weight; safetensors refuses shared storage, so keep one copy
        return {k: v.detach().contiguous() for k, v in self.model.state_dict().items() if k != "lm_head.weight"}


def _blas_info() -> str:
    for part in torch.__config__.show().replace(",", " ").split():
        if part.startswith("BLAS_INFO="):
            return part.split("=", 1)[1]
    return "unknown"


def _library_families(matmul_library: str) -> str:
    """'mkl (SGEMM) + onednn (brg_matmul:avx512_core)' -> 'mkl+onednn'."""
    return "+".join(dict.fromkeys(part.strip().split(" ")[0] for part in matmul_library.split(" + ")))
