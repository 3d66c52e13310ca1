"""The chaos soak's short form (benchmarks/chaos_soak.py runs the long one): a sweep on a local three-node Ray cluster
while worker nodes are killed and started again; every point of every node ends with exactly one ok row, and no ok
row spans a kill."""

import sys

from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from chaos_soak import soak  # noqa: E402


def test_a_sweep_survives_nodes_killed_and_restarted(tmp_path):
    figures = soak(tmp_path, points=8, kills=2, every=(4.0, 8.0))
    assert figures["kills"] == 2
    planned = figures["trials_planned"]  # 24 and the control points
    assert planned >= 24 and figures["ok_identities"] + figures["failed_identities"] == planned
    assert figures["failed_identities"] <= figures["failed_rows"] <= figures["kills"]  # a kill cuts one trial short
    assert figures["lost"] == figures["extra"] == figures["duplicates"] == 0
    assert figures["ok_rows_spanning_a_kill"] == 0
    assert figures["last_exit"] == 0 and figures["runs"] >= 1
