"""A sweep's time budget: the plan keys `budget` and `delta`, `bench.py run --budget`, and what a budgeted sweep keeps
in its manifest so that a resumed run spends only what is left.

    budget: 15m     # the whole run, Ray's start and the report included: s, m or h, or plain seconds
    delta: 0.05     # racing decides "no effect larger than 5%" or an effect beyond it (sweep/results/racing.py)

With a budget the plan's `repeats` are the first rounds every point gets; then rounds of the still-undecided points
follow until the budget is spent (sweep/racing_rounds.py).
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field

from sweep.results.racing import DEFAULT_DELTA
from trainables.config import ConfigError

BUDGET_KEYS = ("budget", "delta")
UNITS = {"s": 1, "m": 60, "h": 3600}
# what a run does after its last trial: the closing lines, the report and Ray's stop (measured 5-10 s on 2 cores)
AFTER_TRIALS_S = 10.0


def parse_duration(value) -> float:
    """Seconds from 900, 900.0, '900', '900s', '15m', '1.5h'; ValueError for anything else or a value not above 0."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration (e.g. 900, 900s, 15m, 1.5h)")
        seconds = float(match.group(1)) * UNITS[match.group(2) or "s"]
    if seconds <= 0:
        raise ValueError(f"{value!r}: a budget must be more than 0 seconds")
    return seconds


def cli_budget(value: str | None, resume: bool) -> float | None:
    """`bench.py run --budget` as seconds (None: the plan's own); a clear error before Ray starts for a bad value."""
    if value is None:
        return None
    if resume:
        raise ConfigError("--budget starts a new sweep; --resume spends what is left of the budget it started with")
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ConfigError(f"--budget {exc}") from None


def budget_keys(document: dict, problems: list[str]) -> dict:
    """`budget_s` (None: no budget) and `delta` from the plan; a bad value is a problem."""
    keys = {"budget_s": None, "delta": DEFAULT_DELTA}
    if document.get("budget") is not None:
        try:
            keys["budget_s"] = parse_duration(document["budget"])
        except ValueError as exc:
            problems.append(f"plan: key 'budget': {exc}")
    delta = document.get("delta", DEFAULT_DELTA)
    if isinstance(delta, bool) or not isinstance(delta, int | float) or not 0 <= delta < 1:
        problems.append(f"plan: key 'delta': {delta!r} must be a number from 0 to below 1 (0.05: ±5%)")
    else:
        keys["delta"] = float(delta)
    return keys


@dataclass
class Budget:
    """A budgeted sweep's state, kept in its manifest: the budget, δ, the seconds spent by earlier runs of it, the
    rounds begun, and each node's variance components once read (sweep/results/measure_length.py)."""

    seconds: float
    delta: float = DEFAULT_DELTA
    first_round: int = 2  # the rounds every point gets before racing looks (the plan's repeats, at least 2)
    spent_s: float = 0.0  # by runs before this one
    rounds: int = 0  # rounds begun, the first ones included
    components: dict[str, dict] = field(default_factory=dict)  # node -> VarianceComponents.as_dict()
    stopped: str | None = None  # why racing ended: "decided", "budget", "rounds"
    started: float = field(default_factory=time.monotonic, repr=False)  # this run's start

    def left_s(self) -> float:
        """Seconds left for trials: the budget less what earlier runs and this one spent, less the closing work."""
        return self.seconds - self.spent_s - (time.monotonic() - self.started) - AFTER_TRIALS_S

    def deadline(self) -> float:
        """time.monotonic() by which the last trial must end."""
        return time.monotonic() + self.left_s()

    def to_manifest(self) -> dict:
        state = asdict(self)
        state.pop("started")
        state["spent_s"] = self.spent_s + time.monotonic() - self.started
        return state

    @classmethod
    def from_manifest(cls, state: dict) -> Budget:
        """A resumed sweep's budget: what its earlier runs spent counts."""
        return cls(**{k: v for k, v in state.items() if k in cls.__dataclass_fields__ and k != "started"})
