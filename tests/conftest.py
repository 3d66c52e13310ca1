"""Shared fixtures: a token cache built once per session, and tiny configs that train in well under a second."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Tests never wait on the hub: the offline corpus is what this machine (and CI) has anyway.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Trials started through bench.py (sweeps, autotune, the CLI) keep their token and peak caches here, never in the
# user's data/ (trainables/launcher.py reads it; workers and Ray trials inherit it)
os.environ.setdefault("BENCH_DATA_DIR", tempfile.mkdtemp(prefix="bench-test-data-"))
# sweeps a test starts take a lock of their own, not the machine's (sweep/run_lock.py): a `make bench` running beside
# the suite neither refuses nor is refused by it
os.environ.setdefault("BENCH_RUN_LOCK", os.path.join(os.environ["BENCH_DATA_DIR"], "run.lock"))
REPO_ROOT = Path(__file__).resolve().parent.parent
# dataset named, not auto: auto is resolved against the checkout's data/hf, and tests train in temporary data dirs
TINY = dict(
    depth=2,
    width=64,
    heads=2,
    seq_len=64,
    batch_size=4,
    vocab_size=512,
    warmup_steps=1,
    measure_steps=3,
    dataset="offline",
)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    from trainables.dataset import prepare_tokens

    path = tmp_path_factory.mktemp("data")
    prepare_tokens(TINY["dataset"], TINY["vocab_size"], path)
    return path


@pytest.fixture(scope="session")
def tokens(data_dir):
    from trainables.dataset import prepare_tokens

    return prepare_tokens(TINY["dataset"], TINY["vocab_size"], data_dir)[0]


CPUINFO_FIXTURES = {
    "zen3-avx2": REPO_ROOT / "tests/fixtures/cpuinfo-zen3-avx2",  # AMD EPYC 7763: AVX2, no AVX-512
    "zen5-avx512": REPO_ROOT / "tests/fixtures/cpuinfo-zen5-avx512",  # AMD EPYC 9755: AVX-512 with BF16
}


@pytest.fixture(params=sorted(CPUINFO_FIXTURES))
def simulated_cpu(request, monkeypatch) -> str:
    """The test runs once as if on each CPU of tests/fixtures (BENCH_CPUINFO: hwctl reads that file, and
    worker processes inherit it); torch still dispatches for the real CPU."""
    monkeypatch.setenv("BENCH_CPUINFO", str(CPUINFO_FIXTURES[request.param]))
    return request.param


@pytest.fixture
def tiny() -> dict:
    return dict(TINY)


@pytest.fixture
def torch_one_thread():
    """torch on one thread for the test: tiny models gain nothing from threads, and on a busy machine their
    spin-waits cost seconds. Restores the count afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
