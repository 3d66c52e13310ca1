"""The store's ok rows as fit points, and the efficiencies fitted on them by non-negative least squares.

A point is one config (config_key) of one node: its step time is the median of its ok rows' step_time_median_s (a
config the plan shares between studies, or repeats, counts once, so the baseline's dozens of rows do not outweigh a
config measured once). Its features are the seconds each class's work takes at 100% of the node's roofs
(features.py), so the model is

    t = sum_c seconds_at_roof_c * x_c,   x_c = 1 / efficiency_c  (the layer class: seconds per layer pass)

which is linear in x. Every x_c must be >= 0 (a class can only add time: a negative efficiency is meaningless, and an
unconstrained least squares trades a negative class against a positive one when two classes' work grows together, as
matmul and element-wise work do with width): scipy.optimize.nnls solves exactly that, the non-negative least squares,
in milliseconds, and a class the data cannot support comes out 0 instead of negative.

Step times span 1000x (a 2-layer width-128 step against a width-2048 one), so an absolute least squares would fit the
slowest configs and leave the fast ones at any relative error. Each point's equation is divided by its measured time,
so the fit minimises the sum of squared relative errors, sum_i ((t_pred_i - t_i) / t_i)^2: every config counts alike.
Columns are scaled to unit norm before the solve (the layer class is in seconds, the others in multiples of their
roof) and scaled back.

Where the trainer times the optimizer apart (torch and NumPy: optimizer_s; jax fuses the step), each such point adds
a second equation, optimizer seconds at roof x x_optimizer = its measured optimizer phase, also relative. Without it
the optimizer's work (proportional to the parameters) and the matmuls' (parameters x tokens) grow together in every
config of one token count, and the fit could not tell them apart: on a quick-plan store it gave the optimizer a
third of the step where the phase measures 7%.

Where the configs' work does not vary enough to tell the classes apart (one config; or one model at several thread
counts, pinnings or allocators, as the 1-thread side of the core-count check is), every split of the time between the
classes fits equally well and NNLS would pick one arbitrarily (all of it on the first column). So the solve carries a
weak pull (PRIOR_WEIGHT, in the normalised units) toward the one efficiency that fits best if every roof class ran at
it, the step's plain roofline time scaled: it decides the splits the data leave free, and moves a fit the data do
determine by far less than their noise (on the quick-plan stores the leave-one-config-out median moved by under 0.2
percentage points with and without it).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

from sweep.predict.features import CLASSES, ROOF_OF, Roofs, config_from_row, peak_dtype_of, seconds_at_roof, work_of
from sweep.predict.roofs import NodeRoofs, node_roofs
from sweep.results.comparison import group_rows
from sweep.results.rows import clean_row, is_number, is_positive
from trainables.config import TrialConfig

# Rows whose measured steps shared their CPUs with other work (foreign_cpu_s: other processes' CPU time on the
# trial's CPUs) above this share of the threads' time measure the machine's load, not the config: left out of fits
# and checks, and counted. Rows without the columns are kept.
MAX_FOREIGN_SHARE = 0.10
# The weight of the pull toward one common efficiency, per class, in the fit's normalised units (module docstring)
PRIOR_WEIGHT = 1e-3


@dataclass
class Point:
    node: str
    config_key: str
    cfg: TrialConfig
    work: dict[str, float]
    roofs: Roofs
    dtype: str  # the matmul peak's dtype (peak_dtype)
    threads: int
    features: np.ndarray  # seconds at 100% of the roofs, per class
    measured_s: float  # median over the config's ok rows on this node
    optimizer_s: float | None  # median of their optimizer phase, where the trainer times it apart
    rows: int
    sweeps: tuple[str, ...]

    @property
    def group(self) -> tuple[str, str]:
        return group_of(self.cfg)


def group_of(cfg: TrialConfig) -> tuple[str, str]:
    """What one fit covers on a node: framework x precision (different kernels, different dtypes)."""
    return cfg.framework, cfg.precision


@dataclass
class StorePoints:
    points: dict[str, list[Point]]  # node -> its points
    roofs: dict[str, NodeRoofs]  # node -> its roofs
    skipped: list[str]  # why some rows made no point
    disturbed: dict[str, int]  # node -> ok rows left out as disturbed
    aliases: dict[str, set[str]]  # node -> its label, hostnames and IPs (what --node and prices may name)


def foreign_share(row: dict) -> float | None:
    """Other work's CPU time on the trial's CPUs over the threads' time of the measured steps; None if unrecorded."""
    foreign, region, threads = row.get("foreign_cpu_s"), row.get("measured_region_s"), row.get("threads")
    if not (is_number(foreign) and is_positive(region) and is_positive(threads)):
        return None
    return foreign / (region * threads)


def disturbed(row: dict) -> bool:
    share = foreign_share(row)
    return share is not None and share > MAX_FOREIGN_SHARE


def store_points(rows: list[dict]) -> StorePoints:
    """Every node's points from store rows (any sweeps); nodes are labelled as `bench.py compare --by host` does."""
    cleaned = [clean_row(r) for r in rows]
    points, roofs, skipped, noisy, aliases = {}, {}, [], {}, {}
    for node, members in group_rows(cleaned, "host").items():
        roofs[node] = node_roofs(node, members)
        aliases[node] = {node} | {str(r[c]) for r in members for c in ("host", "node") if r.get(c)}
        by_key: dict[str, list[dict]] = {}
        noisy[node] = 0
        for r in members:
            if r["_ok"] and disturbed(r):
                noisy[node] += 1
            elif r["_ok"]:
                by_key.setdefault(str(r.get("config_key")), []).append(r)
        points[node] = []
        for key, ok in by_key.items():
            point = _point(node, key, ok, roofs[node], skipped)
            if point is not None:
                points[node].append(point)
    return StorePoints(points, roofs, skipped, noisy, aliases)


def _point(node: str, key: str, ok: list[dict], roofs: NodeRoofs, skipped: list[str]) -> Point | None:
    first = ok[0]
    try:
        cfg = config_from_row(first)
        work = work_of(cfg)
    except (TypeError, ValueError, KeyError) as exc:  # a row of an older schema, or a framework not registered now
        skipped.append(f"{node} config {key}: its config cannot be rebuilt ({exc})")
        return None
    dtype = str(first.get("peak_dtype") or peak_dtype_of(cfg))
    if peak_dtype_of(cfg) == "bf16" and dtype == "fp32":
        # the trial measured no bf16 peak (bf16 is not native under its ISA cap): its kernels convert and run far
        # below the fp32 peak (30x slower on AVX2), so no measured roof describes them
        skipped.append(
            f"{node} config {key}: its matmuls run in bf16 without native support (isa={cfg.isa or 'none'}), and "
            "no roof was measured for emulated bf16 kernels"
        )
        return None
    try:
        threads = int(first.get("threads") or roofs.threads_for(cfg))
        point_roofs = roofs.roofs(dtype, threads, cfg.isa)
    except LookupError as exc:
        skipped.append(f"{node} config {key}: {exc}")
        return None
    measured = statistics.median(r["step_time_median_s"] for r in ok)
    phase = [r["optimizer_s"] for r in ok if is_positive(r.get("optimizer_s"))]
    optimizer = statistics.median(phase) if phase else None
    sweeps = tuple(sorted({str(r.get("sweep")) for r in ok}))
    features = seconds_at_roof(work, point_roofs)
    return Point(node, key, cfg, work, point_roofs, dtype, threads, features, measured, optimizer, len(ok), sweeps)


@dataclass
class Fit:
    """Fitted inverse efficiencies x_c (t = features . x) and the points they were fitted on."""

    inverse_efficiency: np.ndarray
    points: list[Point]

    def predict(self, features: np.ndarray) -> float:
        return float(features @ self.inverse_efficiency)

    def breakdown(self, features: np.ndarray) -> dict[str, float]:
        """Seconds per class of a prediction."""
        return {c: float(f * x) for c, f, x in zip(CLASSES, features, self.inverse_efficiency, strict=True)}

    def efficiencies(self) -> dict[str, float | None]:
        """Per roof class the fraction of its roof attained (None: the fit gave the class no time); for the layer
        class, the seconds per layer pass."""
        out = {}
        for c, x in zip(CLASSES, self.inverse_efficiency, strict=True):
            if c == "layer":
                out[c] = float(x)
            else:
                out[c] = 1 / float(x) if x > 0 else None
        return out

    @property
    def nodes(self) -> list[str]:
        return sorted({p.node for p in self.points})

    @property
    def sweeps(self) -> list[str]:
        return sorted({s for p in self.points for s in p.sweeps})

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.points)


def fit_points(points: list[Point]) -> Fit:
    """NNLS on relative errors, with a weak pull toward one efficiency for every roof class (see the module
    docstring); raises ValueError on an empty list."""
    if not points:
        raise ValueError("no points to fit")
    design = [p.features / p.measured_s for p in points]  # each equation over its measured time
    optimizer = CLASSES.index("optimizer")
    for p in points:  # the optimizer phase timed apart: its own equation, the optimizer class alone
        if p.optimizer_s is not None and p.features[optimizer] > 0:
            alone = np.zeros(len(CLASSES))
            alone[optimizer] = p.features[optimizer] / p.optimizer_s
            design.append(alone)
    design = np.array(design)
    target = np.ones(len(design))
    scale = np.linalg.norm(design, axis=0)
    used = scale > 0
    solution = np.zeros(len(CLASSES))
    if not used.any():
        return Fit(solution, list(points))
    roof = np.array([ROOF_OF[c] is not None for c in CLASSES]) & used
    prior = np.zeros(len(CLASSES))
    if roof.any():  # the one efficiency that fits best if every roof class ran at it: the step's roofline time
        prior[roof] = nnls(design[:, roof].sum(axis=1, keepdims=True), target)[0][0]
    columns = design[:, used] / scale[used]
    pull = math.sqrt(PRIOR_WEIGHT) * np.eye(int(used.sum()))
    augmented = np.vstack([columns, pull])
    scaled, _ = nnls(augmented, np.concatenate([target, pull @ (prior[used] * scale[used])]))
    solution[used] = scaled / scale[used]
    return Fit(solution, list(points))


def relative_error(predicted: float, measured: float) -> float:
    return abs(predicted - measured) / measured


def log_ratio(measured: float, predicted: float) -> float:
    return math.log(measured / predicted) if is_positive(measured) and is_positive(predicted) else math.nan
