"""Before the first trial: is there room for what the sweep will write? A warning, not a refusal (the estimate is
rough, and a full disk mid-sweep loses nothing: bench.py names the path and errno, and --resume continues).

Measured on a 15-minute quick run (2026-12-07, /tmp/qF: 301 rows in 32 MB): a row's Parquet file ~66 KB, Tune's state
for its trial ~37 KB, the report with its plots under 1 MB.
"""

from __future__ import annotations

import shutil
from pathlib import Path

ROW_BYTES = 110_000
REPORT_BYTES = 5_000_000  # the report, the manifest, the wall-time record and Optuna's database, with room to spare


def free_space_warning(result_dir: Path, rows: int) -> str | None:
    """A line to print when the result folder's filesystem has less free space than `rows` rows and a report need."""
    need = rows * ROW_BYTES + REPORT_BYTES
    free = shutil.disk_usage(result_dir).free
    if free >= need:
        return None
    return (
        f"warning: {result_dir} has {free / 1e6:.1f} MB free; this sweep's {rows} rows and report need about "
        f"{need / 1e6:.0f} MB. If the disk fills, bench.py stops naming the path, and --resume continues."
    )
