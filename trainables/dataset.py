"""Training text, a locally trained BPE tokenizer and the token stream, cached under data/.

The default corpus is the Hugging Face dataset ThomasTheMaker/Arc-Corpus-sample, loaded with
`datasets`. When the hub cannot be reached, a copy in the local `datasets` cache is used; failing
that, a real-text corpus every CPython ships (the Python reference documentation in
pydoc_data.topics, ~460k characters of English prose and code). Which one was used is recorded
as `dataset_source` in every result. None of this runs inside a trial's timed region.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from hwctl.files import atomic_path, atomic_write_text

FALLBACK_SOURCE = "offline:pydoc_data.topics"
END_OF_TEXT = "<|endoftext|>"
LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".txt": "text", ".parquet": "parquet", ".csv": "csv"}


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """A TCP connect to the hub endpoint; `datasets` itself retries for ~25 s before giving up."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def _texts_from(dataset) -> list[str]:
    column = "text" if "text" in dataset.column_names else None
    if column is None:
        string_columns = [n for n, f in dataset.features.items() if getattr(f, "dtype", None) == "string"]
        if not string_columns:
            raise ValueError(f"dataset has no text column (columns: {dataset.column_names})")
        column = string_columns[0]
    return [t for t in dataset[column] if t and t.strip()]


def load_texts(name: str, data_dir: Path) -> tuple[list[str], str]:
    """Return (documents, dataset_source)."""
    path = Path(name)
    if path.suffix in LOCAL_FORMATS and path.exists():
        import datasets

        ds = datasets.load_dataset(LOCAL_FORMATS[path.suffix], data_files=str(path), split="train")
        return _texts_from(ds), f"file:{path}"
    if not hub_reachable():
        # offline: the hub cache under data/ may still hold an earlier download
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
    import datasets

    try:
        ds = datasets.load_dataset(name, split="train", cache_dir=str(data_dir / "hf"))
    except Exception:
        if os.environ.get("HF_HUB_OFFLINE") != "1":
            raise  # the hub answered and still failed: a real error the user must see
        return fallback_texts(), FALLBACK_SOURCE
    source = "hub-cache" if os.environ.get("HF_HUB_OFFLINE") == "1" else "hub"
    return _texts_from(ds), f"{source}:{name}"


def fallback_texts() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]


def train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[-80:]


def _save_array(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append ".npy" to a bare path
        np.save(f, array)


def prepare_tokens(name: str, vocab_size: int, data_dir: Path) -> tuple[np.ndarray, dict]:
    """Token ids of the whole corpus and a description of where they came from (cached)."""
    cache = data_dir / "tokens"
    cache.mkdir(parents=True, exist_ok=True)
    stem = f"{_slug(name)}-bpe{vocab_size}"
    ids_path, meta_path = cache / f"{stem}.npy", cache / f"{stem}.json"
    if ids_path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        # a fallback corpus is only a stand-in: prefer the real dataset once the hub answers
        if meta["dataset_source"] != FALLBACK_SOURCE or not hub_reachable():
            return np.load(ids_path, mmap_mode="r"), meta | {"data_cache_hit": True}

    started = time.perf_counter()
    texts, source = load_texts(name, data_dir)
    tokenizer = train_tokenizer(texts, vocab_size)
    eot = tokenizer.token_to_id(END_OF_TEXT)
    ids: list[int] = []
    for encoding in tokenizer.encode_batch(texts):
        ids.extend(encoding.ids)
        ids.append(eot)
    dtype = np.uint16 if vocab_size <= 2**16 else np.uint32
    tokens = np.asarray(ids, dtype=dtype)
    meta = {
        "dataset": name,
        "dataset_source": source,
        "dataset_documents": len(texts),
        "dataset_chars": sum(len(t) for t in texts),
        "dataset_tokens": int(tokens.size),
        "tokenizer": f"byte-level BPE (tokenizers), trained vocab {tokenizer.get_vocab_size()} of {vocab_size}",
        "tokenizer_path": str(cache / f"{stem}.tokenizer.json"),
        "data_build_s": time.perf_counter() - started,
    }
    with atomic_path(cache / f"{stem}.tokenizer.json") as tmp:
        tokenizer.save(str(tmp))
    with atomic_path(ids_path) as tmp:
        _save_array(tmp, tokens)
    atomic_write_text(meta_path, json.dumps(meta, indent=1))
    return tokens, meta | {"data_cache_hit": False}
