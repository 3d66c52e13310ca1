"""The result store: one Parquet file per trial row, hive-partitioned by sweep and host, queried with DuckDB.

    result/trials/sweep=<sweep id>/host=<hostname>/<study>-<config_key>-<uuid>.parquet

One file per row keeps every write atomic and independent: the row is written to a hidden temporary
file, flushed to disk and renamed into place, so a crash leaves either the whole row or nothing
that the `*.parquet` glob would read. Only the driver writes here; workers never do.

A file that cannot be read (a truncated copy, a stray file, a bad disk) costs only its own row: every reader (run,
resume, query, report, compare) goes on with the readable files and names the others once, in one line on stderr with
their count; `bench.py check` lists them, and files whose columns disagree with the registry, and moves them to
result/quarantine/ only when asked (sweep/results/store_check.py). A row left out is missing to a resume, which
measures it again.
"""

from __future__ import annotations

import json
import os
import re
import sys
import uuid
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa
import pyarrow.parquet as pq

from hwctl.files import atomic_path
from trainables.columns import COLUMNS

SCHEMA_VERSION = 1
PARTITIONS = ("sweep", "host")
DEFAULT_RESULT_DIR = Path(__file__).resolve().parents[2] / "result"


class EmptyStore(LookupError):
    pass


class StoreWriteError(OSError):
    """A row could not be written (a full disk, a read-only folder, no permission): OSError(errno, reason, path)."""


def write_error(exc: OSError, path: Path) -> StoreWriteError:
    """The error with its errno and the path it was writing (pyarrow's OSError names neither)."""
    number = exc.errno or int((re.search(r"\[errno (\d+)\]", str(exc), re.IGNORECASE) or [0, 0])[1]) or None
    reason = os.strerror(number) if number else str(exc).splitlines()[0]
    return StoreWriteError(number, reason, str(path))


ARROW_TYPES = {
    "int": pa.int64(),
    "float": pa.float64(),
    "str": pa.string(),
    "bool": pa.bool_(),
    "float_list": pa.list_(pa.float64()),
    "json": pa.string(),
}


def _arrow_value(value):
    """Types Parquet can hold: dicts become JSON text."""
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def _arrow_column(key: str, value) -> pa.Array:
    """The registry's type (a None too gets it, so every file agrees); a column the registry lacks, or a value
    that does not fit its type, is kept with the type Arrow infers: a row is never lost over a type."""
    column = COLUMNS.get(key)
    if column is not None and column.type == "json" and isinstance(value, (list, tuple)):
        value = json.dumps(value)  # a JSON column holds text, whatever its JSON value (a list of frozen layers)
    if column is not None:
        try:
            return pa.array([value], type=ARROW_TYPES[column.type])
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            pass
    if isinstance(value, list):
        return pa.array([value], type=pa.list_(pa.float64()))
    return pa.nulls(1) if value is None else pa.array([value])


def row_table(row: dict) -> pa.Table:
    return pa.table({key: _arrow_column(key, _arrow_value(value)) for key, value in row.items()})


def slug(text) -> str:
    """Text as a file-name part: runs of anything but letters, digits, '.', '_' and '-' become '_'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_")


def unreadable_reason(path: Path) -> str | None:
    """Why a stored file cannot be read as Parquet (its footer and schema), or None: it can."""
    try:
        pq.read_metadata(path)
        return None
    except (OSError, pa.ArrowException) as exc:
        return str(exc).splitlines()[0][:200] or type(exc).__name__


class Store:
    def __init__(self, result_dir: Path | str = DEFAULT_RESULT_DIR):
        self.root = Path(result_dir)
        self.trials_dir = self.root / "trials"
        self._checked: dict[Path, tuple[int, int, str | None]] = {}  # path -> (size, mtime_ns, reason)
        self._named: set[Path] = set()  # unreadable files already named on stderr

    def readable(self) -> tuple[list[Path], dict[Path, str]]:
        """The stored files that read as Parquet, and why each other one does not (each file checked once while its
        size and time stay the same)."""
        good, bad = [], {}
        for path in self.files():
            try:
                info = path.stat()
            except FileNotFoundError:
                continue  # moved away (quarantined) since the listing
            seen = self._checked.get(path)
            if seen is None or seen[:2] != (info.st_size, info.st_mtime_ns):
                seen = (info.st_size, info.st_mtime_ns, unreadable_reason(path))
                self._checked[path] = seen
            if seen[2] is None:
                good.append(path)
            else:
                bad[path] = seen[2]
        return good, bad

    def _name_unreadable(self, bad: dict[Path, str]) -> None:
        new = sorted(set(bad) - self._named)
        if new:
            self._named |= set(new)
            first = new[0]
            print(
                f"bench.py: {len(bad)} unreadable file(s) in {self.trials_dir} left out ({first.name}: {bad[first]}"
                f"{'; ...' if len(new) > 1 else ''}); 'bench.py check' lists them, 'bench.py check --quarantine' "
                "moves them aside",
                file=sys.stderr,
            )

    def append(self, row: dict) -> Path:
        """Write one row atomically; returns the file written."""
        missing = [k for k in (*PARTITIONS, "study", "config_key") if not row.get(k)]
        if missing:
            raise ValueError(f"a stored row needs {missing}")
        folder = self.trials_dir.joinpath(*(f"{k}={quote(str(row[k]), safe='')}" for k in PARTITIONS))
        folder.mkdir(parents=True, exist_ok=True)
        data = {k: v for k, v in row.items() if k not in PARTITIONS} | {"schema_version": SCHEMA_VERSION}
        name = f"{slug(row['study'])[:60]}-{row['config_key']}-{uuid.uuid4().hex[:8]}.parquet"
        final = folder / name
        try:
            with atomic_path(final, durable=True) as tmp:  # a failed write leaves nothing behind
                pq.write_table(row_table(data), tmp)
        except OSError as exc:
            raise write_error(exc, final) from exc
        return final

    def files(self) -> list[Path]:
        return sorted(self.trials_dir.glob("**/*.parquet"))

    def connect(self):
        """A DuckDB connection with the view `trials` over every stored row."""
        import duckdb

        good, bad = self.readable()
        self._name_unreadable(bad)
        if not good:
            raise EmptyStore(f"the store at {self.root} holds no readable trials" + (" yet" if not bad else ""))
        con = duckdb.connect()
        if bad:  # the readable files by name: a glob would stop at the first bad one
            source = "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in good) + "]"
        else:
            source = "'" + str(self.trials_dir / "**" / "*.parquet").replace("'", "''") + "'"
        con.execute(
            f"CREATE VIEW trials AS SELECT * FROM read_parquet({source}, hive_partitioning = true, "
            "union_by_name = true, hive_types = {'sweep': VARCHAR, 'host': VARCHAR})"
        )
        return con

    def query(self, sql: str, params: list | None = None) -> tuple[list[str], list[tuple]]:
        con = self.connect()
        try:
            cursor = con.execute(sql, params or [])
            return [d[0] for d in cursor.description], cursor.fetchall()
        finally:
            con.close()

    def dataframe(self, sql: str = "SELECT * FROM trials", params: list | None = None):
        con = self.connect()
        try:
            return con.execute(sql, params or []).df()
        finally:
            con.close()

    def rows(self, sweep: str | None = None) -> list[dict]:
        good, bad = self.readable()
        if not good:
            self._name_unreadable(bad)
            return []
        where, params = ("WHERE sweep = ?", [sweep]) if sweep else ("", [])
        columns, rows = self.query(f"SELECT * FROM trials {where}", params)
        return [dict(zip(columns, r, strict=True)) for r in rows]

    def identities(self, sweep: str) -> set[str]:
        """'node/study/config_key/repeat' of every (node, trial, repeat) of a sweep that already has a row (an
        interrupted trial's row does not count)."""
        good, bad = self.readable()
        if not good:
            self._name_unreadable(bad)
            return set()
        columns, _ = self.query("SELECT * FROM trials LIMIT 0")
        node = "node" if "node" in columns else "NULL"  # a store written before rows named their node
        repeat = '"repeat"' if "repeat" in columns else "NULL"  # ... or before points were repeated: repeat 0
        # a trial the sweep's interruption cut short (status 'interrupted') is missing: a resume measures it again
        status = "AND status IS DISTINCT FROM 'interrupted'" if "status" in columns else ""
        _, rows = self.query(
            f"SELECT DISTINCT {node}, study, config_key, {repeat} FROM trials WHERE sweep = ? {status}", [sweep]
        )
        return {f"{n or ''}/{study}/{key}/{r or 0}" for n, study, key, r in rows}
