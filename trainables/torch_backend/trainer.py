"""The PyTorch trainer: the training step split into the three phases the timing protocol times apart."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import torch
import torch._dynamo  # noqa: F401 - torch.optim imports it on first use (~0.9 s): the worker counts it as import time
import torch._inductor.custom_graph_pass  # loaded by torch._dynamo already

from hwctl.isa import bf16_native_reason
from hwctl.microbench import cached_peak, matmul_library, matmul_peak_gflops, memory_bandwidth_gbs
from trainables.config import TrialConfig
from trainables.torch_backend.compile_setup import (
    INDUCTOR_COMPILES,
    INDUCTOR_FUSION_OFF,
    MARCH_SIMDLEN,
    inductor_compiler,
)
from trainables.torch_backend.cxx_shim import (
    LOG_DIR_VARIABLE,
    REAL_CXX_VARIABLE,
    compile_commands,
    kernel_command,
    logged_commands,
)
from trainables.torch_backend.fused_linear_act import fusion_evidence
from trainables.torch_backend.model import GPT
from trainables.torch_backend.onednn_fp32 import (
    ONEDNN_BLAS,
    PEAK_FIGURE,
    PEAK_METHOD,
    linear_library,
    measure_peak_gflops,
    route_to_onednn,
    step_math,
)
from trainables.torch_backend.optimizers import build_optimizer, freeze_layers, optimizer_state_bytes
from trainables.torch_backend.quantization import QUANTIZED, apply_quantized_training
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
        if cfg.blas == "onednn-bf16math":
            # the only switch that sends ATen's fp32 matmuls to oneDNN, by letting it compute in bf16 (MKL otherwise)
            torch.backends.mkldnn.matmul.fp32_precision = "bf16"
        elif cfg.blas == "onednn-fp32":
            # strict fp32 math in every oneDNN primitive, and the model's GEMMs routed to oneDNN's inner product
            torch.backends.mkldnn.matmul.fp32_precision = "ieee"
            route_to_onednn(model)
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
        self.inductor_options = inductor_options(cfg) if cfg.compile in INDUCTOR_COMPILES else None
        self.forward_fn = compile_model(model, cfg, self.inductor_options)
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
        facts = {
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
            # what one training step's oneDNN primitives computed in (strict fp32, or a bf16 fpmath), ONEDNN_VERBOSE
            "onednn_math": step_math(self) if self.cfg.blas in ONEDNN_BLAS else None,
        }
        return facts | self.recipe_facts | self.compile_facts()

    def compile_facts(self) -> dict:
        """What the compiler keys did, read back after the timed region (compiled trials; {} for eager)."""
        if self.cfg.compile == "eager":
            return {}
        from torch._dynamo.utils import counters
        from torch._inductor.runtime.cache_dir_utils import cache_dir

        facts = {
            "jit_cache_dir": cache_dir(),
            "fusion_settings": dict(INDUCTOR_FUSION_OFF) if self.cfg.fusion == "off" else None,
        }
        if self.inductor_options is None:
            # aot_eager generates no code, and keeps nothing between processes: AOTAutograd's cache takes only graphs
            # compiled by a serializable compiler (Inductor's; torch/_functorch/aot_autograd.py), so cold is warm
            return facts | {
                "fused_kernels": 0,
                "generated_kernels": 0,
                "jit_cache_hits": None,
                "jit_cache_misses": None,
            }
        facts |= {  # Inductor's compiled graphs, looked up in its FX graph cache (behind AOTAutograd's)
            "jit_cache_hits": counters["inductor"]["fxgraph_cache_hit"],
            "jit_cache_misses": counters["inductor"]["fxgraph_cache_miss"],
        }
        return facts | inductor_kernel_counts() | cxx_facts(self.cfg) | {"vec_isa": vec_isa(self.inductor_options)}

    @property
    def compute_dtype(self) -> str:
        """The dtype the matmuls run in: bf16 weights, or bf16 under autocast (mixed), else fp32."""
        return "bfloat16" if self.cfg.precision in ("bf16", "mixed") else "float32"

    def memory_bandwidth(self, threads: int, cpus: list[int], cache_dir: Path, fingerprint_id: str | None) -> dict:
        """The triad bandwidth at the trial's threads, in this worker: torch is loaded already (a miss measures it on
        the trial's threads and places, like the peak)."""
        return memory_bandwidth_gbs(threads, cache_dir, fingerprint_id)

    def matmul_peak(self, threads: int, cache_dir: Path) -> dict:
        """The peak MFU divides by, measured in this worker (so under the trial's CPUs, pinning, threads, allocator
        and ISA cap) or read from the figures cached under the same conditions since the sweep began
        (hwctl/microbench.py): bf16's where the trial's matmuls run in bf16 and the CPU does bf16 natively under the
        trial's ISA cap; fp32's otherwise, since without native bf16 the kernels convert and run fp32 FMAs at best."""
        if self.cfg.blas == "onednn-fp32":  # its own library is oneDNN's strict-fp32 inner product, not torch.mm
            fp32 = cached_peak(PEAK_FIGURE, "float32", threads, cache_dir, measure_peak_gflops, PEAK_METHOD)
        else:
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
        if self.cfg.blas == "onednn-fp32":
            self.matmul_library = linear_library(*shape)
        else:
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


# ---- the compile keys: how the model is compiled, and what Inductor did --------------------------------------------
class RealizeEachOp(torch._inductor.custom_graph_pass.CustomGraphPass):
    """fusion=off's post-grad pass: every op's result becomes a buffer of its own when Inductor lowers the graph (the
    `inductor_realize_to_strides` mark GraphLowering.run_node honours), so no pointwise op is inlined into the loop
    of its consumer. Views stay views. The outputs of a multi-output op (var_mean) are `getitem` nodes: marked too,
    or var_mean's division by N would be inlined into the `add` of epsilon that reads it."""

    def __call__(self, graph: torch.fx.Graph) -> None:
        for node in graph.nodes:
            if node.op != "call_function" or getattr(node.target, "is_view", False):
                continue
            if isinstance(node.meta.get("val"), torch.Tensor):
                node.meta["inductor_realize_to_strides"] = True

    def uuid(self) -> bytes:  # part of the FX graph cache key: a changed pass is a cache miss
        return torch._inductor.custom_graph_pass.get_hash_for_files((__file__,))


KERNELS, FUSED_KERNELS = "bench_kernels", "bench_fused_kernels"  # counters["inductor"] keys of CountFusedKernels


class CountFusedKernels(torch._inductor.custom_graph_pass.CustomSchedulerPass):
    """Run by Inductor's scheduler right after fusion (config._post_fusion_custom_pass), it changes nothing and counts
    the kernels to be generated (one per node left after fusion; library calls and views are none) and those that compute more
    than one op of the graph (views, which compute nothing, left out).
    It counts into counters["inductor"]: Inductor saves a compiled graph's counter increments with it in the FX graph
    cache and replays them on a hit (codecache.py: "useful for testing with the cache enabled"), so a trial on a
    warm cache reads the counts of the code it loaded."""

    def __call__(self, nodes: list) -> list:
        from torch._dynamo.utils import counters
        from torch._inductor.scheduler import ExternKernelSchedulerNode, NopKernelSchedulerNode

        for node in nodes:
            if isinstance(node, (ExternKernelSchedulerNode, NopKernelSchedulerNode)):
                continue  # a library call (mm, attention) or a view: no generated kernel
            ops = {
                origin
                for part in node.get_nodes()
                for origin in part.node.get_origins()
                if origin.op == "call_function" and not getattr(origin.target, "is_view", False)
            }
            counters["inductor"][KERNELS] += 1
            counters["inductor"][FUSED_KERNELS] += len(ops) > 1
        return nodes

    def uuid(self) -> bytes:
        return torch._inductor.custom_graph_pass.get_hash_for_files((__file__,))


def inductor_options(cfg: TrialConfig) -> dict:
    """torch.compile's Inductor options for `cfg`: the mode's (max-autotune), simdlen, fusion=off's settings."""
    mode = "max-autotune" if cfg.compile == "inductor-max-autotune" else "default"
    options = dict(torch._inductor.list_mode_options(mode)) | {"_post_fusion_custom_pass": CountFusedKernels()}
    simdlen = cfg.simdlen if cfg.simdlen is not None else MARCH_SIMDLEN.get(cfg.march)
    if simdlen is not None:
        options["cpp.simdlen"] = simdlen
    if cfg.fusion == "off":
        options |= {key: value for key, value in INDUCTOR_FUSION_OFF.items() if key != "realize_each_op"}
        options["post_grad_custom_post_pass"] = RealizeEachOp()
    return options


def compile_model(model: torch.nn.Module, cfg: TrialConfig, options: dict | None):
    """The model as the trial runs it: eager, AOTAutograd's graphs run by ATen (aot_eager), or Inductor's code."""
    if cfg.compile == "aot_eager":
        return torch.compile(model, backend="aot_eager")
    if cfg.compile in INDUCTOR_COMPILES:
        # mode and options exclude each other in torch.compile: the mode's options are in `options`
        return torch.compile(model, options=options)
    return model


def inductor_kernel_counts() -> dict:
    """{fused_kernels, generated_kernels} of the graphs Inductor compiled, or loaded from its cache, in this process."""
    from torch._dynamo.utils import counters

    return {"fused_kernels": counters["inductor"][FUSED_KERNELS], "generated_kernels": counters["inductor"][KERNELS]}


def cxx_facts(cfg: TrialConfig) -> dict:
    """The compile lines the shim logged (torch_backend/cxx_shim.py; None without it) and the compiler's version."""
    log_dir = os.environ.get(LOG_DIR_VARIABLE)
    commands = logged_commands(Path(log_dir)) if log_dir else None
    compiler = os.environ.get(REAL_CXX_VARIABLE) or shutil.which(inductor_compiler(cfg))
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    return {
        "cxx_command": kernel_command(commands) if commands is not None else None,
        "cxx_compiles": len(compile_commands(commands)) if commands is not None else None,
        "cxx_version": version.splitlines()[0] if version else None,
    }


def vec_isa(options: dict) -> str:
    """The vector ISA Inductor picks under the trial's options (simdlen), with its width: 'avx512 (512-bit)'."""
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    with torch._inductor.config.patch(options):
        isa = pick_vec_isa()
    return f"{isa} ({isa.bit_width()}-bit)" if isa else "scalar (no vector ISA)"


def _blas_info() -> str:
    for part in torch.__config__.show().replace(",", " ").split():
        if part.startswith("BLAS_INFO="):
            return part.split("=", 1)[1]
    return "unknown"


def _library_families(matmul_library: str) -> str:
    """'mkl (SGEMM) + onednn (brg_matmul:avx512_core)' -> 'mkl+onednn'."""
    return "+".join(dict.fromkeys(part.strip().split(" ")[0] for part in matmul_library.split(" + ")))
