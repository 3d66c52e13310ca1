"""jax: everything the jax framework owns, and nothing else imports it but through the trainer registry.

- support.py: what jax can run (compile jit or eager, attention backends, precisions, optimizers, XLA's BLAS
  backends) and the hooks the launcher calls before its worker starts; imports no jax.
- trainer.py: JaxTrainer, the trainables.trainer.Trainer the worker runs (jax.jit + optax, facts, the matmul peak).
- model.py: the GPT as pure jax functions, shaped like the torch and NumPy models.
- environment.py: XLA_FLAGS per BLAS backend and for fusion=off, and the compilation cache's variables.
- hlo_kernels.py: the fused and generated kernels counted in the compiled step's optimized HLO text.
"""
