"""numpy: everything the NumPy framework owns, and nothing else imports it but through the trainer registry.

- support.py: what NumPy can run (eager, manual attention, fp32, AdamW, the BLAS its wheel ships); imports no NumPy.
- trainer.py: NumpyTrainer, the trainables.trainer.Trainer the worker runs (hand-written AdamW, facts, the peak).
- model.py: the GPT with a hand-written backward, shaped like the torch and jax models.
"""
