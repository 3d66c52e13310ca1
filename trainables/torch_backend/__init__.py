"""torch: everything the torch framework owns, and nothing else imports it but through the trainer registry.

- support.py: what torch can run (compile modes, attention backends, precisions, optimizers, BLAS backends, the keys
  only it applies) and the hooks the launcher calls before its worker starts; imports no torch.
- trainer.py: TorchTrainer, the trainables.trainer.Trainer the worker runs (threads, the step, facts, the matmul peak).
- model.py: the GPT in torch.nn, shaped like the jax and NumPy models.
- compile_setup.py: Inductor's compiler keys: its worker environment and what this node cannot compile (no torch).
- cxx_shim.py: the logging C++ compiler wrapper Inductor runs (cxx, cxx_opt), and its log's readers.
- fused_linear_act.py: Linear + activation as one oneDNN kernel (fused_linear_act=true).
- quantization.py: quantisation-aware training with torchao (precision q8, q4, bitnet).
- optimizers.py: the optimizer axis (adamw, sgd, lamb, lookahead) and freeze_layers.
"""
