"""trainables: one trial, from a validated config to a result row, in whichever framework the config names.

The framework-neutral core names no framework; it reaches one only through the registry in trainer.py:
- config.py: a TrialConfig from what a user wrote (keys.py: the values each key may take; trial_config.py: the
  dataclass and its config_key; validation.py: the rules and the autos they resolve).
- support.py: the type of a framework's declaration of what it can run; trainer.py: the Trainer every framework
  implements, and the registry that finds a framework's package by name.
- launcher.py: builds a trial's environment and starts its worker; worker.py: measures, with timing.py's protocol.
- columns.py: every column of the result row; flops.py: the FLOPs of a step; memory.py and activation_memory.py: the
  memory a trial needs; dataset.py: the tokens; weights.py: the initial weights every framework shares.

One package per framework, each a support.py (its declaration, importing no framework) and a trainer.py:
torch_backend/, jax_backend/, numpy_backend/.
"""
