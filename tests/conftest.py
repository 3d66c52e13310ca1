"""Shared fixtures: a token cache built once per session, and tiny configs that train in well under a second."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never wait on the hub: the offline corpus is what this machine (and CI) has anyway.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO_ROOT = Path(__file__).resolve().parent.parent
TINY = dict(depth=2, width=64, heads=2, seq_len=64, batch_size=4, vocab_size=512, warmup_steps=1, measure_steps=3)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    from trainables.config import DEFAULT_DATASET
    from trainables.dataset import prepare_tokens

    path = tmp_path_factory.mktemp("data")
    prepare_tokens(DEFAULT_DATASET, TINY["vocab_size"], path)
    return path


@pytest.fixture(scope="session")
def tokens(data_dir):
    from trainables.config import DEFAULT_DATASET
    from trainables.dataset import prepare_tokens

    return prepare_tokens(DEFAULT_DATASET, TINY["vocab_size"], data_dir)[0]


@pytest.fixture
def tiny() -> dict:
    return dict(TINY)
