"""A budgeted sweep after its first rounds: rounds of the points whose ratios are still undecided, until each is
decided, the budget is spent or MAX_REPEATS rounds have run.

Each round re-measures, on each node, every point with an undecided ratio (sweep/results/racing.py) and the reference
it is compared with, in an order shuffled anew, with the node's control points between them as in the first rounds.
The round's pairs go into the manifest before the first of them runs, so a sweep killed in the middle of a round
resumes with exactly the pairs the store lacks. Each trial of these rounds measures the steps its node's variance
components ask for (sweep/results/measure_length.py, read from the first rounds), never more than the plan asked. No trial starts that would end after the budget by its expected length; the pairs that would are dropped and
recorded as such in the manifest.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable

from sweep.ledger import pair_key
from sweep.plan import MAX_REPEATS
from sweep.results.measure_length import VarianceComponents, variance_components
from sweep.results.racing import race, to_remeasure
from sweep.results.rows import clean_row, is_control, step_times


def racing_rounds(
    sweep, run_pairs: Callable[[list[int]], list[int]], live_nodes: Callable[[], set[str]], save: Callable[[], None]
) -> None:
    """Rounds until nothing is undecided or the budget is spent. `run_pairs` runs pairs under the budget's deadline
    and returns those it dropped; `save` writes the manifest."""
    budget = sweep.budget
    while True:
        rows = sweep.store.rows(sweep.sweep_id)
        decisions = race(rows, first_round=budget.first_round, delta=budget.delta)
        wanted = {(node, key) for node, key in to_remeasure(rows, decisions) if node in live_nodes()}
        if not wanted:
            budget.stopped = "decided"
            break
        if budget.rounds >= MAX_REPEATS:
            budget.stopped = "rounds"
            break
        if budget.left_s() <= 0:
            budget.stopped = "budget"
            break
        for node in {node for node, _ in wanted} - set(budget.components):
            components = variance_components(first_rows(rows, node, budget.first_round))
            if components is not None:
                budget.components[node] = components.as_dict()
        before = len(sweep.pairs)
        new = add_round(sweep, wanted, budget.rounds, rows)
        sweep.expected += len(sweep.pairs) - before  # the progress line's total: every row this round adds
        budget.rounds += 1
        save()
        dropped = run_pairs(new)
        save()
        if dropped:
            budget.stopped = "budget"
            break


def first_rows(rows: list[dict], node: str, first_round: int) -> list[dict]:
    """A node's rows of the first rounds and its control points: what its variance components are read from."""
    return [
        r
        for r in rows
        if str(r.get("node")) == node
        and (is_control(r) or (r.get("phase", "grid") == "grid" and (r.get("repeat") or 0) < first_round))
    ]


def add_round(sweep, wanted: set[tuple[str, str]], round_: int, rows: list[dict]) -> list[int]:
    """Append round `round_`'s pairs (each wanted point once per node, shuffled, control points between) to the
    sweep; returns their indices."""
    new: list[int] = []
    for node in sorted({node for node, _ in wanted}):
        keys = {key for n, key in wanted if n == node}
        measuring = [
            i
            for i, p in enumerate(sweep.pairs)
            if p["node"] == node
            and p["repeat"] == 0
            and p.get("phase") == "grid"
            and p.get("measured_by") is None
            and not p.get("unsupported")
            and pair_key(p) in keys
        ]
        random.Random(f"{sweep.order.get('order_seed', 0)}/{round_}/{node}").shuffle(measuring)
        lengths = measure_lengths(sweep, node, rows)
        controls = [i for i, p in enumerate(sweep.pairs) if p["node"] == node and p.get("phase") == "control"]
        next_control = 1 + max((sweep.pairs[i]["repeat"] for i in controls), default=-1)
        position = 1 + max((p.get("trial_order") or 0 for p in sweep.pairs if p["node"] == node), default=-1)
        every = sweep.order.get("control_every") or 0
        for n, original in enumerate(measuring):
            if controls and every and n % every == 0:
                new.append(_copy(sweep, controls[0], next_control, position, lengths))
                next_control, position = next_control + 1, position + 1
            first = _copy(sweep, original, round_, position, lengths)
            new.append(first)
            shares = [_copy(sweep, s, round_, position, lengths) for s in sweep.pairs[original].get("shares", [])]
            for s in shares:
                sweep.pairs[s]["measured_by"] = first
            sweep.pairs[first]["shares"] = shares
            new += shares
            position += 1
    return [i for i in new if sweep.pairs[i].get("measured_by") is None]


def _copy(sweep, index: int, repeat: int, position: int, lengths: dict[str, dict]) -> int:
    pair = {k: v for k, v in sweep.pairs[index].items() if k not in ("shares", "measured_by", "dropped")}
    pair |= {"repeat": repeat, "trial_order": position, "identity": pair["identity"].rsplit("/", 1)[0] + f"/{repeat}"}
    pair |= lengths.get(pair_key(pair), {})
    sweep.pairs.append(pair)
    sweep.by_identity[pair["identity"]] = len(sweep.pairs) - 1
    return len(sweep.pairs) - 1


def measure_lengths(sweep, node: str, rows: list[dict]) -> dict[str, dict]:
    """config_key -> {"measure": {"measure_steps": n}, "measure_rule": why} for this node's points for which a shorter
    trial buys more precision per second than the plan's (sweep/results/measure_length.py); {} without components."""
    state = sweep.budget.components.get(node)
    if state is None:
        return {}
    components = VarianceComponents.from_dict(state)
    measured: dict[str, list[dict]] = {}
    for r in (clean_row(r) for r in rows):
        if str(r.get("node")) == node and r["_ok"] and not r.get("shared_from") and step_times(r):
            measured.setdefault(r["config_key"], []).append(r)
    lengths = {}
    for key, trials in measured.items():
        step_s = statistics.median(r["step_time_median_s"] for r in trials)
        planned = round(statistics.median(len(step_times(r)) for r in trials))
        best = components.steps(step_s, planned)
        if best is None:
            continue
        rule = (
            f"Kalibera-Jones: {best} steps buy more precision per second than {planned}: a trial's sd "
            f"{math.sqrt(components.variance(best)):.1%} at {best} steps, {math.sqrt(components.variance(planned)):.1%} "
            f"at {planned}; fixed cost {components.fixed_s:.2f} s, step {step_s * 1e3:.1f} ms"
        )
        lengths[key] = {"measure": {"measure_steps": best}, "measure_rule": rule}
    return lengths
