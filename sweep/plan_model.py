"""What an expanded plan is: its trials (`Trial`), the plan itself (`Plan`), and `PlanError`, how a plan that
cannot run is reported. sweep/plan.py builds them from a plan's YAML; the runner, ledger and nodes read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trainables.config import TrialConfig

CONTROL_STUDY = "control"  # the study (and phase) of the control points: a plan's study may not take the name


class PlanError(ValueError):
    """A plan that cannot run; `problems` lists every problem found, each naming its study and key."""

    def __init__(self, source: str, problems: list[str]):
        self.problems = problems
        super().__init__(f"plan {source}: {len(problems)} problem(s)\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class Trial:
    study: str
    point: dict  # the keys this study varies, with this trial's values
    config: TrialConfig
    unsupported: str | None = None  # why this node cannot honour it (recorded, not run)
    reference: dict | None = None  # the study's reference figure (plan key `reference`), carried into its rows

    @property
    def config_key(self) -> str:
        return self.config.config_key()

    @property
    def identity(self) -> str:
        return f"{self.study}/{self.config_key}"


@dataclass
class Plan:
    name: str
    source: str
    baseline: dict
    studies: list[dict]
    trials: list[Trial] = field(default_factory=list)
    description: str = ""
    skipped: list[str] = field(default_factory=list)  # studies or points this machine cannot run (skip_unsupported)
    refinements: dict[str, dict] = field(default_factory=dict)  # study -> {"axis", "points", "base"} for Optuna
    repeats: int = 1  # how many times each point runs
    order_seed: int = 0  # seeds the shuffle of each round of repeats
    control_every: int = 0  # a control point (the baseline re-measured) every this many trials of a node; 0: none
    control: Trial | None = None  # the control point: the baseline as a trial of study 'control' (None: none here)
    budget_s: float | None = None  # the run's time budget (sweep/budget.py); None: every round, however long
    delta: float = 0.05  # racing's "no effect larger than delta" (sweep/results/racing.py)
