"""What a training run costs: predicted step time x steps, and x a price per node-hour where one is known.

The price comes from `--price-per-hour P` (every node alike), else from the Ray node label PRICE_LABEL
(`bench-price-per-hour`) that cluster.yaml gives a node on its `ray start` line, e.g.

    ~/cpu-pretrain-bench/venv/bin/ray start ... --labels=bench-price-per-hour=0.68

(Ray's `--labels "k1=v1,k2=v2"`; the older JSON form `--labels='{"bench-price-per-hour": "0.68"}'` is read too).
The head's line prices `provider.head_ip`, the workers' line every `provider.worker_ips` entry (cluster.yaml's local
provider starts every worker with one command, so they share a price; give the head and the workers different ones,
or use --price-per-hour per run). A price is in whatever currency it is written in, per node-hour.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from sweep.predict.features import PredictError
from sweep.results.report_tables import PROJECTION_STEPS

PRICE_LABEL = "bench-price-per-hour"
DEFAULT_STEPS = PROJECTION_STEPS  # 10k, as the report's projections
LABELS = re.compile(r"--labels(?:=|\s+)(?:'([^']*)'|\"([^\"]*)\"|(\S+))")


@dataclass
class RunCost:
    steps: float
    tokens: float
    seconds: float
    price_per_hour: float | None
    price_source: str | None

    @property
    def cost(self) -> float | None:
        return None if self.price_per_hour is None else self.seconds / 3600 * self.price_per_hour


def run_cost(
    step_time_s: float,
    tokens_per_step: int,
    *,
    steps: float | None = None,
    tokens: float | None = None,
    price: tuple[float, str] | None = None,
) -> RunCost:
    """The run of `steps` optimizer steps, or of enough steps to see `tokens` tokens (rounded up), default 10k."""
    if steps is not None and tokens is not None:
        raise PredictError("--steps and --tokens both given: a run is sized by one of them")
    for name, value in (("--steps", steps), ("--tokens", tokens)):
        if value is not None and not value > 0:
            raise PredictError(f"{name}={value:g}: give a positive number")
    if tokens is not None:
        steps = -(-tokens // tokens_per_step)
    steps = DEFAULT_STEPS if steps is None else steps
    price_per_hour, source = price if price else (None, None)
    return RunCost(steps, steps * tokens_per_step, steps * step_time_s, price_per_hour, source)


def label_price(text: str) -> float | None:
    """The PRICE_LABEL value in a `ray start` line's --labels, or None."""
    for match in LABELS.finditer(text):
        value = next(g for g in match.groups() if g is not None)
        labels: dict = {}
        if value.lstrip().startswith("{"):
            try:
                labels = json.loads(value)
            except ValueError:
                labels = {}
        else:
            labels = dict(part.split("=", 1) for part in value.split(",") if "=" in part)
        if PRICE_LABEL in labels:
            try:
                return float(labels[PRICE_LABEL])
            except ValueError:
                raise PredictError(
                    f"{PRICE_LABEL}={labels[PRICE_LABEL]!r} in a ray start line: give a number (price per node-hour)"
                ) from None
    return None


def cluster_prices(path: Path) -> dict[str, float]:
    """{node IP: price per hour} from a cluster.yaml's start lines; {} where the file is absent or names no price."""
    import yaml

    path = Path(path)
    if not path.exists():
        return {}
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise PredictError(f"--cluster {path}: not YAML ({exc})") from None
    provider = config.get("provider") or {}
    prices = {}
    head = label_price(" ".join(map(str, config.get("head_start_ray_commands") or [])))
    if head is not None and provider.get("head_ip"):
        prices[str(provider["head_ip"])] = head
    worker = label_price(" ".join(map(str, config.get("worker_start_ray_commands") or [])))
    if worker is not None:
        prices |= {str(ip): worker for ip in provider.get("worker_ips") or []}
    return prices


def node_price(
    aliases: set[str], price_per_hour: float | None, prices: dict[str, float], cluster: Path
) -> tuple[float, str] | None:
    """(price, where it came from) for a node known by these names and IPs, or None."""
    if price_per_hour is not None:
        if not price_per_hour >= 0:
            raise PredictError(f"--price-per-hour={price_per_hour:g}: give a price of zero or more")
        return price_per_hour, "--price-per-hour"
    found = next((prices[a] for a in sorted(aliases) if a in prices), None)
    return None if found is None else (found, f"{cluster} label {PRICE_LABEL}")


def cost_per_token(step_time_s: float, tokens_per_step: int, price_per_hour: float) -> float:
    return step_time_s / 3600 * price_per_hour / tokens_per_step
