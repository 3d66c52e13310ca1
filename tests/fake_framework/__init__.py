"""A framework registered from outside trainables/, for tests: BENCH_TRAINERS="fake=tests.fake_framework".

- support.py: what it can run (its declaration, read by config validation; imports no NumPy).
- trainer.py: FakeTrainer, a bigram LM in NumPy with a fused step, which fails a trial that loaded torch.
"""
