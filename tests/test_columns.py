"""The column registry: every column a row can carry is in it once, and the README, the summary, the compare table
and the store's Parquet types all agree with it."""

import dataclasses

import pyarrow.parquet as pq
import pytest

from hwctl.fingerprint import host_fingerprint
from scripts.readme_columns import readme_block
from sweep.results.store import ARROW_TYPES, Store
from tests.conftest import REPO_ROOT
from trainables.columns import (
    COLUMNS,
    KINDS,
    TYPES,
    columns_markdown,
    compare_columns,
    summary_columns,
    unknown_columns,
)
from trainables.config import TrialConfig, build_config
from trainables.launcher import run_trial


def test_readme_tables_are_the_registry():
    block = readme_block((REPO_ROOT / "README.md").read_text())
    assert block == columns_markdown(), "README column tables are stale: run venv/bin/python scripts/readme_columns.py"
    for name in ("step_time_median_s", "hw_mem_bw_gbs", "config_key", "depth"):
        assert f"| `{name}` |" in block


def test_every_config_key_is_a_config_column_and_nothing_else_is():
    keys = {f.name for f in dataclasses.fields(TrialConfig)}
    assert {c.name for c in COLUMNS.values() if c.kind == "config"} == keys
    assert all(c.kind in KINDS and c.type in TYPES and c.meaning for c in COLUMNS.values())


def test_summary_and_compare_read_the_registry():
    summary = summary_columns()
    assert [c.name for c in summary][:3] == ["status", "error", "config_key"]
    assert all(c.summary and c.summary.format(1) for c in summary if c.type in ("int", "float"))
    shown = {c.name: c.compare for c in compare_columns()}
    assert shown["hw_mem_bw_gbs"] == "memory bandwidth GB/s (triad, all cores)" and "hw_fingerprint_id" not in shown
    assert all(COLUMNS[name].kind == "recorded" for name in shown)


def test_a_real_trial_row_has_only_registered_columns_and_stores_with_their_types(tiny, data_dir, tmp_path):
    row = run_trial(build_config(tiny), data_dir=data_dir, output_dir=tmp_path)
    assert row["status"] == "ok", row.get("error")
    unsupported = run_trial(build_config(tiny | {"threads": 4096}), data_dir=data_dir, output_dir=tmp_path)
    assert unsupported["status"] == "unsupported"
    bookkeeping = {"sweep": "s", "study": "baseline", "point": {}, "phase": "grid", "node": "127.0.0.2"}
    for trial_row in (row, unsupported):
        full = trial_row | host_fingerprint() | bookkeeping
        assert unknown_columns(full) == []
        path = Store(tmp_path / "store").append(full)
        schema = pq.read_schema(path)
        wrong = {
            f.name: str(f.type) for f in schema if f.name in COLUMNS and f.type != ARROW_TYPES[COLUMNS[f.name].type]
        }
        assert wrong == {}
    # a None (freq_ghz: leave the machine's frequency alone) still gets its registry type: every file agrees
    assert unsupported["freq_ghz"] is None and schema.field("freq_ghz").type == ARROW_TYPES["float"]


def test_a_column_the_registry_lacks_is_kept_not_lost(tmp_path):
    path = Store(tmp_path).append({"sweep": "s", "host": "h", "study": "x", "config_key": "k", "brand_new": 3})
    assert pq.read_table(path).column("brand_new").to_pylist() == [3]
    assert unknown_columns({"brand_new": 3, "mfu": 0.1}) == ["brand_new"]


@pytest.mark.parametrize("kind", KINDS)
def test_markdown_has_one_table_per_kind(kind):
    members = [c for c in COLUMNS.values() if c.kind == kind]
    assert f"**{kind}** ({len(members)} columns)" in columns_markdown()
