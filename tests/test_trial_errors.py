"""A trial that errors inside Ray (its actor died, its node was lost) still becomes a failed row."""

import json
from types import SimpleNamespace

from sweep.ledger import SweepLedger, pair_of
from sweep.plan import load_plan
from sweep.results.store import Store
from sweep.tuning import StoreWriter
from tests.conftest import TINY


def ray_trial(config: dict, error_text: str, tmp_path):
    """What Tune hands a callback for an errored trial: its config and the error file it wrote."""
    error_file = tmp_path / "error.txt"
    error_file.write_text(error_text)
    return SimpleNamespace(config=config, error_file=str(error_file))


def test_grid_and_searcher_trials_that_error_in_ray_are_recorded(tmp_path):
    store = Store(tmp_path / "store")
    node = "10.0.0.7"  # not in any Ray cluster: the callback does not wait for it to be marked dead
    pairs = [pair_of(i, node, "h7", t) for i, t in enumerate(load_plan("smoke").trials)]
    sweep = SweepLedger("s-1", "smoke", store, pairs=pairs, node_columns={node: {"host": "h7"}}, quiet=True)
    writer = StoreWriter(sweep, ("width", "refine", TINY, node))
    death = "Traceback ...\nray.exceptions.ActorDiedError: The actor died unexpectedly before finishing this task.\n"
    writer.on_trial_error(0, [], ray_trial({"trial": {"i": 1, "study": "width", "width": 64}}, death, tmp_path))
    writer.on_trial_error(0, [], ray_trial({"width": 48}, death, tmp_path))
    rows = sorted(store.rows("s-1"), key=lambda r: r["phase"])
    assert [(r["study"], r["phase"], r["status"]) for r in rows] == [
        ("width", "grid", "failed"),
        ("width", "refine", "failed"),
    ]
    assert all(
        r["error"] == "node lost: h7 (10.0.0.7) left the cluster during the trial; Ray trial error: "
        "ray.exceptions.ActorDiedError: The actor died unexpectedly before finishing this task."
        for r in rows
    )
    assert {(r["node"], r["host"]) for r in rows} == {(node, "h7")} and sweep.lost_nodes == {node}
    assert json.loads(rows[0]["point"]) == {"width": 64} and rows[1]["width"] == 48
    assert sweep.missing() == [0, 2, 3]  # the errored grid trial counts as done: resume will not re-run it
