"""Choosing along the curve: the grid, the recommended t and the effective region (docs/algorithm.md §4)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.interpolate import CubicSpline

from unlearning.config import Targets
from unlearning.metrics import PointMetrics

SEARCH_STEP = 0.01
REFERENCE_WINDOW = (0.75, 1.0)  # the published code searched only here


def grid(points: int) -> list[float]:
    """`points` evenly spaced t values over [0, 1], endpoints included."""
    return [round(float(t), 6) for t in np.linspace(0.0, 1.0, points)]


TARGETED = {
    "retain_accuracy": "retain_accuracy",
    "forget_accuracy": "forget_accuracy",
    "test_accuracy": "test_accuracy",
    "mia_efficacy": "mia_efficacy",
}


def target_gap(metrics: dict[str, float | np.ndarray], targets: Targets) -> float | np.ndarray:
    """Mean |metric − target| over the targets given: an estimate of the Avg. Gap to a retrained model.

    The published rule used only ½(|RA − c_r| + |FA − c_f|); on random forgetting that ignores the
    membership-inference signal and picks points near θ_p whose MIA efficacy is far from a retrained
    model's. With test accuracy and MIA efficacy targets too, it mirrors all four terms of the Avg. Gap
    (|UA − UA*| equals |FA − FA*|).
    """
    terms = [np.abs(metrics[name] - getattr(targets, name)) for name in TARGETED if getattr(targets, name) is not None]
    return sum(terms) / len(terms)


def _series(points: Sequence[PointMetrics], name: str) -> np.ndarray:
    return np.array([getattr(p, name) for p in points], dtype=float)


def forget_noise(points: Sequence[PointMetrics], targets: Targets, forget_rows: int) -> float:
    """The noise of the target gap from the forget-set accuracy: the binomial standard error of FA at the
    point of least target gap, divided by the number of terms the gap averages (FA is one of them).

    FA is a share of `forget_rows` rows: gaps closer than this are not told apart by the data. (Class-wise,
    where FA ≈ 0 at the best point, the noise is ≈ 0 and the rule is the plain argmin.) Measured on
    MNIST-5k random forgetting, the undivided error moved rl's and neggrad_plus's recommendations
    0.1–0.3 t past the best point; divided, θ_p is still kept where the curve does not beat it.
    """
    best = min(points, key=lambda p: float(target_gap(_as_metrics(p), targets)))
    p = best.forget_accuracy
    terms = sum(getattr(targets, name) is not None for name in TARGETED)
    return float(np.sqrt(p * (1.0 - p) / max(1, forget_rows))) / terms


def recommend_t(
    points: Sequence[PointMetrics], targets: Targets, window: tuple[float, float] = (0.0, 1.0), noise: float = 0.0
) -> float:
    """The t in `window` (step 0.01) whose interpolated target gap is within `noise` of the least one,
    taking the largest such t (the θ_p side: a good θ_p is not moved back towards θ_o for a difference
    the data cannot resolve). Each metric is interpolated by a cubic spline through the measured points.
    """
    ordered = sorted(points, key=_t)
    ts = _series(ordered, "t")
    lo, hi = window
    search = np.round(np.arange(round(lo / SEARCH_STEP), round(hi / SEARCH_STEP) + 1) * SEARCH_STEP, 2)
    interpolated = {}
    for name in TARGETED:
        values = _series(ordered, name)
        curve = CubicSpline(ts, values)(search) if len(ts) >= 3 else np.interp(search, ts, values)
        interpolated[name] = np.clip(curve, 0.0, 1.0)
    gaps = np.asarray(target_gap(interpolated, targets))
    within = np.nonzero(gaps <= gaps.min() + noise + 1e-12)[0]
    return float(search[within[-1]])


def effective_region(points: Sequence[PointMetrics], targets: Targets, margin: float = 0.0) -> list[list[float]]:
    """Intervals of consecutive measured t values whose target gap beats the θ_p endpoint (t = 1) by more
    than `margin`."""
    ordered = sorted(points, key=_t)
    end_gap = target_gap(_as_metrics(ordered[-1]), targets)
    regions: list[list[float]] = []
    previous_inside = False
    for p in ordered:
        inside = bool(target_gap(_as_metrics(p), targets) < end_gap - margin)
        if inside and previous_inside:
            regions[-1][1] = _t(p)
        elif inside:
            regions.append([_t(p), _t(p)])
        previous_inside = inside
    return regions


def coarse_to_fine(
    points: int,
    measure: Callable[[list[float]], dict[float, PointMetrics | None]],
    choose: Callable[[list[PointMetrics]], float],
    refine: bool = True,
) -> list[PointMetrics]:
    """Measure grid(points) coarse-to-fine: about every fifth point first (endpoints included), then the
    grid points within half a coarse step of `choose(coarse points)`. `measure` takes each pass's points at
    once (a worker may fan them out) and returns each t's metrics, None for a rejected (non-finite) point.
    Without `refine`, or on grids of 11 points or fewer, every point in one pass."""
    ts = grid(points)
    stride = _coarse_stride(points, refine)
    coarse = sorted(set(ts[::stride]) | {ts[-1]})
    measured = measure(coarse)
    if stride > 1:
        kept = [p for p in measured.values() if p is not None]
        centre = choose(kept) if kept else 0.5
        half = stride / (points - 1) / 2 + 1e-9
        measured |= measure([t for t in ts if t not in measured and abs(t - centre) <= half])
    return [p for t in sorted(measured) if (p := measured[t]) is not None]


def _coarse_stride(points: int, refine: bool) -> int:
    return max(1, round((points - 1) / 5)) if refine and points > 11 else 1


def planned_points(points: int, refine: bool = True) -> int:
    """How many points `coarse_to_fine` measures at most (for progress reports)."""
    stride = _coarse_stride(points, refine)
    if stride == 1:
        return points
    return len(set(grid(points)[::stride]) | {1.0}) + stride


def _t(point: PointMetrics) -> float:
    assert point.t is not None  # a point of the curve (only a model evaluated on its own has no t)
    return point.t


def _as_metrics(point: PointMetrics) -> dict[str, float | np.ndarray]:
    return {name: getattr(point, name) for name in TARGETED}
