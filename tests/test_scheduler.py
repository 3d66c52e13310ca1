"""NodeQueue, the Tune searcher that hands out (node, trial) pairs, driven as Tune drives it."""

from ray.tune.search import Searcher

from sweep import scheduler
from sweep.scheduler import LostNodeStopper, NodeQueue


def make_queue(pending: dict[str, list[int]], alive: set[str], lost: set[str] | None = None) -> NodeQueue:
    queue = NodeQueue(pending, lambda i: {"trial": {"i": i}}, lambda: set(alive), lost if lost is not None else set())
    queue._looked_at = -1e9  # look at the nodes on the first call
    return queue


def test_one_trial_per_node_at_a_time_and_every_node_busy():
    queue = make_queue({"a": [0, 2], "b": [1, 3]}, alive={"a", "b"})
    assert queue.suggest("t1") == {"trial": {"i": 0}}  # node a
    assert queue.suggest("t2") == {"trial": {"i": 1}}  # node b: a is busy
    assert queue.suggest("t3") is None  # both busy: Tune asks again later
    queue.on_trial_complete("t2")
    assert queue.suggest("t3") == {"trial": {"i": 3}}  # b's next, while a still runs
    queue.on_trial_complete("t1")
    assert queue.suggest("t4") == {"trial": {"i": 2}}
    queue.on_trial_complete("t3")
    queue.on_trial_complete("t4")
    assert queue.suggest("t5") == Searcher.FINISHED


def test_a_lost_node_keeps_its_trials_pending_and_the_others_finish(monkeypatch):
    monkeypatch.setattr(scheduler, "LOST_GRACE_S", 0.0)
    alive = {"a", "b"}
    queue = make_queue({"a": [0, 2], "b": [1, 3]}, alive)
    stopper = LostNodeStopper(queue)
    assert queue.suggest("t1") == {"trial": {"i": 0}} and queue.suggest("t2") == {"trial": {"i": 1}}
    alive.discard("b")  # b leaves while idle-looking to Ray: its trial t2 may never start
    queue._looked_at = -1e9
    queue.on_trial_complete("t1")
    assert queue.suggest("t3") == {"trial": {"i": 2}}  # a goes on; nothing more is handed to b
    assert not stopper.stop_all()  # a still has a trial running
    queue.on_trial_complete("t3")
    assert queue.suggest("t4") is None  # t2 is still placed on b: not finished yet
    assert stopper.stop_all()  # but only a trial on a node gone for good is left: end the experiment
    assert queue.pending["b"] == [3]  # b's last trial stays missing, for --resume


def test_a_node_the_runner_saw_die_is_dropped_at_once():
    lost: set[str] = set()
    queue = make_queue({"a": [0, 1]}, alive={"a"}, lost=lost)
    assert queue.suggest("t1") == {"trial": {"i": 0}}
    lost.add("a")  # its trial failed with the node gone (the runner's callback)
    queue.on_trial_complete("t1", error=True)
    assert queue.suggest("t2") == Searcher.FINISHED  # Ray may still list it alive: no new trial there
