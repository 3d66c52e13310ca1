"""The data pipeline: the offline corpus, a hub dataset that cannot be had (a failure, never a silent stand-in),
what dataset=auto resolves to, the token cache, local files via `datasets`."""

import json
import shutil
import socket

import numpy as np
import pytest
from tokenizers import Tokenizer

from tests.bench_process import bench_trial
from tests.conftest import TINY
from trainables.config import DEFAULT_DATASET, build_config
from trainables.dataset import (
    FALLBACK_SOURCE,
    OFFLINE_DATASET,
    DatasetUnavailable,
    hub_reachable,
    prepare_tokens,
    resolve_auto_dataset,
)


def test_offline_corpus_is_real_text(tmp_path):
    tokens, meta = prepare_tokens(OFFLINE_DATASET, 1024, tmp_path)
    assert meta["dataset"] == "offline" and meta["dataset_source"] == FALLBACK_SOURCE
    assert meta["data_cache_hit"] is False
    assert meta["dataset_chars"] > 400_000 and tokens.size > 90_000
    tokenizer = Tokenizer.from_file(meta["tokenizer_path"])
    assert tokenizer.get_vocab_size() == 1024 and int(tokens.max()) < 1024
    text = tokenizer.decode(tokens[:3000].tolist())
    words = text.split()
    assert sum(w in ("the", "of", "is", "a", "to") for w in words) > 50  # English prose, not random ids


def test_token_cache_is_reused(tmp_path):
    first, _ = prepare_tokens(OFFLINE_DATASET, 512, tmp_path)
    second, meta = prepare_tokens(OFFLINE_DATASET, 512, tmp_path)
    assert meta["data_cache_hit"] is True and meta["dataset_source"] == FALLBACK_SOURCE
    assert np.array_equal(first, second)
    cached = json.loads((tmp_path / "tokens" / "offline-bpe512.json").read_text())
    assert cached["corpus_tokens"] == first.size
    assert not list((tmp_path / "tokens").glob("*.tmp"))  # atomic writes leave no temporaries


def test_a_hub_dataset_that_cannot_be_had_fails_instead_of_falling_back(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not hub_reachable()
    with pytest.raises(DatasetUnavailable) as failure:
        prepare_tokens(DEFAULT_DATASET, 512, tmp_path)
    assert str(failure.value) == (
        f"dataset '{DEFAULT_DATASET}': the hub cannot be reached and {tmp_path / 'hf'} holds no copy "
        "(dataset=offline, or bench.py --dataset-offline, trains on the offline corpus instead)"
    )
    # a token cache from before dataset=offline existed: the offline corpus filed under the hub's name
    prepare_tokens(OFFLINE_DATASET, 512, tmp_path)
    stem = DEFAULT_DATASET.replace("/", "_")
    for suffix in (".npy", ".json"):
        shutil.copy(tmp_path / f"tokens/offline-bpe512{suffix}", tmp_path / f"tokens/{stem}-bpe512{suffix}")
    with pytest.raises(DatasetUnavailable):
        prepare_tokens(DEFAULT_DATASET, 512, tmp_path)


def test_auto_is_the_hub_dataset_only_where_the_node_can_have_it(tmp_path, monkeypatch):
    resolve = resolve_auto_dataset.__wrapped__  # uncached: each case asks afresh
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve(DEFAULT_DATASET, tmp_path) == OFFLINE_DATASET  # no hub, no cache (CI, this machine)
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "unrelated").mkdir()
    assert resolve(DEFAULT_DATASET, tmp_path) == OFFLINE_DATASET  # a cache without this dataset
    # a hub that answers: a local listener as the endpoint (only the TCP connect is tried)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    with socket.create_server(("127.0.0.1", 0)) as hub:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{hub.getsockname()[1]}")
        assert hub_reachable() and resolve(DEFAULT_DATASET, tmp_path) == DEFAULT_DATASET


def test_the_dataset_used_enters_config_key():
    offline, hub = build_config({"dataset": "offline"}), build_config({"dataset": DEFAULT_DATASET})
    assert offline.config_key() != hub.config_key()
    # auto is resolved when the config is validated: the key names the data, never "auto"
    auto = build_config({}).dataset
    assert auto in (OFFLINE_DATASET, DEFAULT_DATASET) and build_config({"dataset": "auto"}).dataset == auto
    assert build_config({}).config_key() == build_config({"dataset": auto}).config_key()


def test_local_file_goes_through_datasets(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    lines = [{"text": f"The quick brown fox number {i} jumps over the lazy dog."} for i in range(200)]
    corpus.write_text("\n".join(json.dumps(x) for x in lines))
    tokens, meta = prepare_tokens(str(corpus), 300, tmp_path / "data")
    assert meta["dataset_source"] == f"file:{corpus}"
    assert meta["dataset_documents"] == 200
    tokenizer = Tokenizer.from_file(meta["tokenizer_path"])
    assert "quick brown fox" in tokenizer.decode(tokens[:40].tolist())
    with pytest.raises(FileNotFoundError, match=f"dataset '{tmp_path / 'gone.txt'}': no such file"):
        prepare_tokens(str(tmp_path / "gone.txt"), 300, tmp_path / "data")


def test_dataset_tokens_trains_on_the_first_n_tokens_in_the_real_worker():
    """dataset_tokens=N: the batches come from the corpus's first N tokens, and the row says how many it held, the
    corpus size beside it and their bytes; more tokens than the corpus has fails the trial with the reason."""
    steps = ("warmup_steps=1", "measure_steps=3", "measure_seconds=0", "cores=1", "dataset=offline")
    tiny = [f"{k}={v}" for k, v in TINY.items() if k != "dataset"]
    done = bench_trial(*tiny, *steps, "dataset_tokens=4096")
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads(done.stdout)
    assert (row["status"], row["dataset_tokens"]) == ("ok", 4096)
    assert row["corpus_tokens"] > 50_000 and row["data_bytes"] == 4096 * 2  # uint16 ids at vocab <= 65536
    whole = bench_trial(*tiny, *steps)
    assert json.loads(whole.stdout)["dataset_tokens"] == row["corpus_tokens"]  # auto: the whole corpus, recorded
    too_many = bench_trial(*tiny, *steps, f"dataset_tokens={row['corpus_tokens'] + 1}")
    failed = json.loads(too_many.stdout)
    assert too_many.returncode != 0 and failed["status"] == "failed"
    assert f"dataset_tokens={row['corpus_tokens'] + 1} exceeds the {row['corpus_tokens']} tokens" in failed["error"]
