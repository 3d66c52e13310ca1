"""What the fake framework can run: one value of each declared key, the ones its trainer really does.

Its trainer is a bigram table with no attention, compiled by nothing, in float32, updated by Adam through whatever
BLAS NumPy ships; it applies none of the framework-specific keys.
"""

from __future__ import annotations

from trainables.support import MIB, FrameworkSupport

SUPPORT = FrameworkSupport(
    trainer="tests.fake_framework.trainer:FakeTrainer",
    compile=("eager",),
    attn_backend=("manual",),  # it has no attention at all: manual is the value that asks for no library kernel
    precision=("fp32",),
    optimizer=("adamw",),
    blas=("openblas",),
    runtime_bytes=76 * MIB,  # NumPy's footprint (trainables/numpy_backend/support.py)
)
