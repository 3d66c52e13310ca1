"""The one atomic file write every layer uses: write a hidden temporary file beside the target, then rename.

It lives in hwctl, the lowest package, because the hardware journal needs it first (trainables and sweep
import hwctl, never the other way). A reader sees the old file or the whole new one, never a half-written
file; `durable=True` also flushes the data and the rename to disk, for what must survive a power cut
(the hardware journal, stored rows).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: Path | str, *, durable: bool = False) -> Iterator[Path]:
    """Yields a temporary path to write; on a clean exit it replaces `path`, on an exception it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        if durable:
            _fsync(tmp, os.O_RDONLY)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        _fsync(path.parent, os.O_RDONLY)  # the rename itself


def atomic_write_text(path: Path | str, text: str, *, durable: bool = False) -> None:
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_text(text)


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
