"""Which (node, trial) pair Tune starts next: one timed trial per node at a time, every node busy, each node's
trials in the sweep's order.

`sweep_order` is that order, fixed when the sweep starts and kept in its manifest: the repeats of the plan's
points in shuffled rounds, with control points (the baseline re-measured) between them.

Tune asks its search algorithm for the next trial whenever it has room; `NodeQueue` answers with the
next pending trial of a node that has nothing running (or "not now"), so the nodes work in parallel
and never run two timed trials at once. Each trial's placement group claims every CPU of its node
through the `node:<IP>` resource Ray gives each node.

A node that leaves the cluster is noticed two ways: the trial it was running fails (the runner then
calls `node_lost`), or the periodic look at `ray.nodes()` finds it dead. Its remaining trials stay
pending here and missing in the store, for `--resume`. A trial Tune was still trying to place on a
node that died cannot start at all; `LostNodeStopper` ends the experiment once nothing else is left.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from ray import tune
from ray.tune.search import Searcher

LIVENESS_PERIOD_S = 2.0
LOST_GRACE_S = 30.0  # a running trial on a dead node normally fails within seconds; then it is stuck


def sweep_order(points: int, repeats: int, seed: int, control_every: int = 0) -> list[tuple[int | None, int]]:
    """The order one node runs its trials in: (point, repeat), where point None is a control point and its repeat
    counts the node's control points.

    Round r holds repeat r of every point, shuffled by a generator seeded with `seed`: the repeats of one point are a
    round apart on average (at least a quarter of one) instead of back to back, and a drift over minutes spreads over
    every study instead of reading as a slope along one of them. With `control_every` K the control point comes first
    and after every K-th trial, on a node with more than K trials (one control point alone would show no drift)."""
    rng = random.Random(seed)
    trials: list[tuple[int | None, int]] = []
    previous: list[int] = []
    for repeat in range(repeats):
        previous = _shuffled_round(points, rng, previous)
        trials += [(point, repeat) for point in previous]
    return _with_controls(trials, control_every)


def _shuffled_round(points: int, rng: random.Random, previous: list[int]) -> list[int]:
    order = list(range(points))
    rng.shuffle(order)
    # the points that ended the previous round may not open this one: a quarter of a round at least between two
    # repeats of a point. Not half a round: then the same points would fill the same half of every round.
    quarter = max(1, points // 4)
    ended = set(previous[-quarter:]) if points > 1 else set()
    opening = [point for point in order if point not in ended][:quarter]
    return opening + [point for point in order if point not in opening]


def _with_controls(trials: list[tuple[int | None, int]], every: int) -> list[tuple[int | None, int]]:
    if not every or len(trials) <= every:
        return trials
    order: list[tuple[int | None, int]] = []
    for position, trial in enumerate(trials):
        if position % every == 0:
            order.append((None, position // every))
        order.append(trial)
    if len(trials) % every == 0:  # the last K trials get a control point after them too
        order.append((None, len(trials) // every))
    return order


class NodeQueue(Searcher):
    def __init__(
        self,
        pending: dict[str, list[int]],
        config_of: Callable[[int], dict],
        alive_ips: Callable[[], set[str]],
        known_lost: set[str],
        deadline: float | None = None,
        expected_s: Callable[[int], float | None] | None = None,
    ):
        super().__init__(metric="step_time_median_s", mode="min")
        # a budget: no trial starts that would end after `deadline` (time.monotonic()) by its expected length
        self.deadline, self.expected_s = deadline, expected_s
        self.dropped: list[int] = []  # pairs the budget left out
        # node IP -> its pair indices, run in the order given (the sweep's order)
        self.pending = {node: list(indices) for node, indices in pending.items()}
        self.config_of, self.alive_ips = config_of, alive_ips
        self.known_lost = known_lost  # nodes the runner saw go (their trial failed): shared, read every time
        self.running: dict[str, str] = {}  # node -> Tune trial id
        self.node_of: dict[str, str] = {}  # Tune trial id -> node
        self.index_of: dict[str, int] = {}  # Tune trial id -> its pair
        self.lost: dict[str, float] = {}  # node -> when it was found gone
        self._looked_at = 0.0

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # the space is fixed: the pairs given at construction

    def suggest(self, trial_id: str):
        self._look_at_nodes()
        for node, indices in self.pending.items():
            if node in self.running or node in self.lost:
                continue
            while indices and not self._fits(indices[0]):
                self.dropped.append(indices.pop(0))
            if indices:
                self.running[node], self.node_of[trial_id] = trial_id, node
                self.index_of[trial_id] = indices.pop(0)
                return self.config_of(self.index_of[trial_id])
        if not self.running and not self.work_left():
            return Searcher.FINISHED
        return None  # every node with work is busy: Tune asks again

    def _fits(self, index: int) -> bool:
        """The trial would end before the deadline (a trial of unknown length fits while time is left)."""
        if self.deadline is None:
            return True
        expected = (self.expected_s(index) if self.expected_s else None) or 0.0
        return time.monotonic() + expected <= self.deadline

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        node = self.node_of.pop(trial_id, None)
        if node is not None and self.running.get(node) == trial_id:
            del self.running[node]

    def in_flight(self) -> list[int]:
        """The pairs of the trials running now (an interrupted sweep records them as interrupted)."""
        return [self.index_of[trial_id] for trial_id in self.running.values()]

    def node_lost(self, node: str) -> None:
        self.lost.setdefault(node, time.monotonic())

    def work_left(self) -> bool:
        """Trials still pending on a node that is alive."""
        return any(indices and node not in self.lost for node, indices in self.pending.items())

    def only_stuck_left(self) -> bool:
        """Nothing can run any more but trials Tune is trying to place on nodes gone for a while."""
        self._look_at_nodes()
        if self.work_left() or not self.running:
            return False
        now = time.monotonic()
        return all(node in self.lost and now - self.lost[node] > LOST_GRACE_S for node in self.running)

    def _look_at_nodes(self) -> None:
        for node in self.known_lost:
            self.node_lost(node)
        if time.monotonic() - self._looked_at < LIVENESS_PERIOD_S:
            return
        self._looked_at = time.monotonic()
        alive = self.alive_ips()
        for node in self.pending:
            if node not in alive:
                self.node_lost(node)

    def __getstate__(self):  # Tune pickles its config; only this live object is ever used
        return {"pending": self.pending}

    def save(self, checkpoint_path: str) -> None:
        pass  # nothing to keep: on resume the store says which pairs are missing

    def restore(self, checkpoint_path: str) -> None:
        pass


class LostNodeStopper(tune.Stopper):
    def __init__(self, queue: NodeQueue):
        self.queue = queue

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.queue.only_stuck_left()
