"""The data pipeline: the offline fallback when the hub is unreachable, the token cache, local files via `datasets`."""

import json

import numpy as np
from tokenizers import Tokenizer

from trainables.config import DEFAULT_DATASET
from trainables.dataset import FALLBACK_SOURCE, hub_reachable, prepare_tokens


def test_offline_fallback_is_real_text(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not hub_reachable()
    tokens, meta = prepare_tokens(DEFAULT_DATASET, 1024, tmp_path)
    assert meta["dataset_source"] == FALLBACK_SOURCE
    assert meta["data_cache_hit"] is False
    assert meta["dataset_chars"] > 400_000 and tokens.size > 90_000
    tokenizer = Tokenizer.from_file(meta["tokenizer_path"])
    assert tokenizer.get_vocab_size() == 1024 and int(tokens.max()) < 1024
    text = tokenizer.decode(tokens[:3000].tolist())
    words = text.split()
    assert sum(w in ("the", "of", "is", "a", "to") for w in words) > 50  # English prose, not random ids


def test_token_cache_is_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    first, _ = prepare_tokens(DEFAULT_DATASET, 512, tmp_path)
    second, meta = prepare_tokens(DEFAULT_DATASET, 512, tmp_path)
    assert meta["data_cache_hit"] is True and meta["dataset_source"] == FALLBACK_SOURCE
    assert np.array_equal(first, second)
    cached = json.loads((tmp_path / "tokens" / "ThomasTheMaker_Arc-Corpus-sample-bpe512.json").read_text())
    assert cached["dataset_tokens"] == first.size
    assert not list((tmp_path / "tokens").glob("*.tmp"))  # atomic writes leave no temporaries


def test_local_file_goes_through_datasets(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    lines = [{"text": f"The quick brown fox number {i} jumps over the lazy dog."} for i in range(200)]
    corpus.write_text("\n".join(json.dumps(x) for x in lines))
    tokens, meta = prepare_tokens(str(corpus), 300, tmp_path / "data")
    assert meta["dataset_source"] == f"file:{corpus}"
    assert meta["dataset_documents"] == 200
    tokenizer = Tokenizer.from_file(meta["tokenizer_path"])
    assert "quick brown fox" in tokenizer.decode(tokens[:40].tolist())
