"""Autotune on a tiny model with a small budget, through real Ray Tune and Optuna."""

import json

import pytest

from sweep.autotune import SETTINGS, autotune
from sweep.results.store import Store
from tests.conftest import TINY
from trainables.columns import unknown_columns


def test_autotune_returns_settings_and_records_the_ab_measurement(tmp_path):
    result = autotune(TINY, tmp_path, trials=3, ab_rounds=2, include_compile=False, quiet=True)
    assert set(result.best) <= set(SETTINGS) and set(result.best) == set(result.default)
    assert result.default["pinning"] == "compact" and result.default["attn_backend"] == "sdpa"
    assert result.speedup > 0 and result.speedup_low <= result.speedup_high
    assert result.command.startswith("python bench.py trial ") and "width=64" in result.command
    rows = Store(tmp_path).rows(result.sweep_id)
    searched = [r for r in rows if r["phase"] == "autotune"]
    ab = sorted((r for r in rows if r["phase"] == "ab"), key=lambda r: (r["ab_round"], r["ab_arm"] != "default"))
    assert len(searched) == 3
    # the defaults are measured first, then A/B/A/B alternately, each a fresh worker process
    first = min(searched, key=lambda r: r["recorded_at"])
    assert json.loads(first["point"]) == result.default
    assert [(r["ab_round"], r["ab_arm"]) for r in ab] == [(0, "default"), (0, "best"), (1, "default"), (1, "best")]
    assert [unknown_columns(r) for r in rows] == [[]] * len(rows)  # every column is in the registry
    assert len({r["node"] for r in rows}) == 1  # searched and A/B rows name the one node they ran on
    assert all(r["status"] == "ok" and r["pinning"] == result.best["pinning"] for r in ab if r["ab_arm"] == "best")
    medians = {arm: sorted(r["step_time_median_s"] for r in ab if r["ab_arm"] == arm) for arm in ("default", "best")}
    assert result.speedup == pytest.approx(sum(medians["default"]) / sum(medians["best"]))
