"""`bench.py check`: every stored file that cannot be read, or whose columns disagree with the registry, listed; moved
to result/quarantine/ (the same partition folders, so moving a file back restores it) only with --quarantine.

Readers already leave unreadable files out and name them (sweep/results/store.py); a file whose column types differ
from the registry's still reads alone, but DuckDB may refuse to unify it with the others (a text column where the
registry says a number), so check names it too. Nothing is moved, deleted or rewritten unless asked.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from sweep.results.store import ARROW_TYPES, Store
from trainables.columns import COLUMNS

QUARANTINE_DIR = "quarantine"


@dataclass(frozen=True)
class Finding:
    path: Path
    problem: str  # "unreadable" or "schema"
    detail: str


def schema_disagreements(path: Path) -> list[str]:
    """'column: stored type, registry type' for every registered column the file stores with another type (a null
    column agrees with any type)."""
    found = []
    for field in pq.read_schema(path):
        column = COLUMNS.get(field.name)
        if column is None or pa.types.is_null(field.type):
            continue
        expected = ARROW_TYPES[column.type]
        if field.type != expected:
            found.append(f"{field.name}: {field.type}, the registry says {expected}")
    return found


def check_store(store: Store) -> list[Finding]:
    good, bad = store.readable()
    findings = [Finding(path, "unreadable", reason) for path, reason in sorted(bad.items())]
    for path in good:
        disagreements = schema_disagreements(path)
        if disagreements:
            findings.append(Finding(path, "schema", "; ".join(disagreements)))
    return findings


def quarantine(store: Store, findings: list[Finding]) -> list[Path]:
    """Move each file found to result/quarantine/<its path under trials/>; the new paths."""
    moved = []
    for finding in findings:
        target = store.root / QUARANTINE_DIR / finding.path.relative_to(store.trials_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(finding.path, target)
        moved.append(target)
    return moved


def cmd_check(args) -> int:
    store = Store(args.result_dir)
    findings = check_store(store)
    total = len(store.files())
    if not findings:
        print(f"{store.trials_dir}: {total} file(s), every one readable and agreeing with the registry")
        return 0
    for finding in findings:
        print(f"{finding.problem:10} {finding.path}: {finding.detail}")
    counts = {p: sum(f.problem == p for f in findings) for p in ("unreadable", "schema")}
    summary = f"{counts['unreadable']} unreadable, {counts['schema']} disagreeing with the registry, of {total} file(s)"
    if not args.quarantine:
        print(f"{summary}; 'bench.py check --quarantine' moves them to {store.root / QUARANTINE_DIR}", file=sys.stderr)
        return 1
    quarantine(store, findings)
    print(
        f"{summary}: moved to {store.root / QUARANTINE_DIR} (a resume measures their rows again; moving a file back "
        "to trials/ restores it)"
    )
    return 0


def add_check_parser(commands, store_parent: argparse.ArgumentParser) -> None:
    check = commands.add_parser(
        "check",
        parents=[store_parent],
        help="list stored files that cannot be read or disagree with the registry; --quarantine moves them aside",
    )
    check.add_argument("--quarantine", action="store_true", help="move them to result/quarantine/")
    check.set_defaults(func=cmd_check)
