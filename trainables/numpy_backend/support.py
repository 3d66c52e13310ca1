"""What the NumPy trainer can run: numpy's declaration (NumPy not imported). Its worker needs nothing set before it
starts beyond the thread variables every worker gets. The trainer is trainables/numpy_backend/trainer.py.
"""

from __future__ import annotations

from trainables.support import MIB, FrameworkSupport

SUPPORT = FrameworkSupport(
    trainer="trainables.numpy_backend.trainer:NumpyTrainer",
    compile=("eager",),
    attn_backend=("manual",),
    precision=("fp32",),
    optimizer=("adamw",),  # hand-written AdamW (trainables/numpy_backend/trainer.py)
    blas=("openblas",),  # the BLAS NumPy's wheel ships
    runtime_bytes=76 * MIB,  # measured as trainables/memory.py says
)
