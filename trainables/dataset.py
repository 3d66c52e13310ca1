"""Training text, a locally trained BPE tokenizer and the token stream, cached under data/.

`dataset` names the text, and so enters config_key: a Hugging Face dataset (loaded with `datasets`
from the hub or, when the hub cannot be reached, from the local `datasets` cache), a local file, or
`offline`: a real-text corpus every CPython ships (the Python reference documentation in
pydoc_data.topics, ~460k characters of English prose and code). A named hub dataset that can be had
from neither the hub nor the cache fails the trial: it never silently becomes another text. The
default, dataset=auto, is resolved where the config is validated, on the node that will run it
(`resolve_auto_dataset`): the hub dataset where it can be had, else `offline`, so a hub run and a
fallback run have different config_keys. Where the text came from is recorded as `dataset_source`.
None of this runs inside a trial's timed region.
"""

from __future__ import annotations

import functools
import json
import os
import re
import socket
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from hwctl.files import atomic_path, atomic_write_text

OFFLINE_DATASET = "offline"  # the config value that names the offline corpus
FALLBACK_SOURCE = "offline:pydoc_data.topics"  # its dataset_source
# where trials read and cache their data (trainables.launcher.DATA_DIR, which sweeps use on every node)
DATA_DIR = Path(__file__).resolve().parent.parent / "data"
END_OF_TEXT = "<|endoftext|>"
LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".txt": "text", ".parquet": "parquet", ".csv": "csv"}


class DatasetUnavailable(RuntimeError):
    """The named dataset can be had from neither the hub nor the local cache."""


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


@functools.cache
def resolve_auto_dataset(hub_name: str, data_dir: Path = DATA_DIR) -> str:
    """What dataset=auto means on this node: `hub_name` where the hub or data_dir's cache has it, else `offline`.

    Asked once per process (the hub check may wait 3 s), by config validation: every node expands a plan
    itself, so each resolves its own. A hub that goes away after this makes the trial fail, not fall back."""
    if hub_reachable() or _cached_copy(hub_name, data_dir):
        return hub_name
    return OFFLINE_DATASET


def _cached_copy(name: str, data_dir: Path) -> bool:
    cache = data_dir / "hf"
    if not cache.is_dir() or not any(cache.iterdir()):
        return False  # no cache at all: spare the second it takes to import datasets
    try:
        _load_hub_dataset(name, data_dir)
    except DatasetUnavailable:
        return False
    return True


def _load_hub_dataset(name: str, data_dir: Path):
    """(the dataset, "hub" or "hub-cache"); DatasetUnavailable when neither has it."""
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
        raise DatasetUnavailable(
            f"dataset {name!r}: the hub cannot be reached and {data_dir / 'hf'} holds no copy "
            f"(dataset={OFFLINE_DATASET}, or bench.py --dataset-offline, trains on the offline corpus instead)"
        ) from None
    return ds, "hub-cache" if os.environ.get("HF_HUB_OFFLINE") == "1" else "hub"


def load_texts(name: str, data_dir: Path) -> tuple[list[str], str]:
    """Return (documents, dataset_source)."""
    if name == OFFLINE_DATASET:
        return fallback_texts(), FALLBACK_SOURCE
    path = Path(name)
    if path.suffix in LOCAL_FORMATS:
        if not path.exists():
            raise FileNotFoundError(f"dataset {name!r}: no such file")
        import datasets

        ds = datasets.load_dataset(LOCAL_FORMATS[path.suffix], data_files=str(path), split="train")
        return _texts_from(ds), f"file:{path}"
    ds, source = _load_hub_dataset(name, data_dir)
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
        # before dataset=offline existed, a hub name's cache could hold the offline corpus: never reuse that
        if (meta["dataset_source"] == FALLBACK_SOURCE) == (name == OFFLINE_DATASET):
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
        "corpus_tokens": int(tokens.size),
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
