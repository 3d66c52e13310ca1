"""The result row: its columns (one registry, below) and the columns every row starts with."""

from __future__ import annotations

import socket
from datetime import UTC, datetime

from trainables.config import TrialConfig


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def base_row(cfg: TrialConfig) -> dict:
    """What every row carries, whatever happens to the trial: its config, identity, host and start time."""
    return cfg.to_dict() | {
        "config_key": cfg.config_key(),
        "status": None,
        "error": None,
        "host": socket.gethostname(),
        "started_at": now_iso(),
    }
