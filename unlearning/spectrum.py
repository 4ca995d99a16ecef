"""Choosing along the curve: the grid, the recommended t and the effective region (MCU.md §4)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.interpolate import CubicSpline

from unlearning.config import Targets
from unlearning.metrics import PointMetrics

SEARCH_STEP = 0.01
REFERENCE_WINDOW = (0.75, 1.0)  # the published code searched only here


def grid(points: int) -> list[float]:
    """`points` evenly spaced t values over [0, 1], endpoints included."""
    return [round(float(t), 6) for t in np.linspace(0.0, 1.0, points)]


def target_gap(retain_accuracy: float | np.ndarray, forget_accuracy: float | np.ndarray,
               targets: Targets) -> float | np.ndarray:
    """½(|RA − c_r| + |FA − c_f|): how far a point is from the targets, without any retrained model."""
    return 0.5 * (np.abs(retain_accuracy - targets.retain_accuracy)
                  + np.abs(forget_accuracy - targets.forget_accuracy))


def _argmin_towards_larger_t(ts: np.ndarray, values: np.ndarray) -> float:
    reversed_index = int(np.argmin(values[::-1]))  # argmin takes the first minimum: ties go to larger t
    return float(ts[len(ts) - 1 - reversed_index])


def recommend_t(points: Sequence[PointMetrics], targets: Targets,
                window: tuple[float, float] = (0.0, 1.0)) -> float:
    """The t in `window` (step 0.01) minimising the target gap of cubic interpolations of RA(t), FA(t)."""
    ts = np.array([p.t for p in points], dtype=float)
    ra = np.array([p.retain_accuracy for p in points])
    fa = np.array([p.forget_accuracy for p in points])
    lo, hi = window
    search = np.round(np.arange(round(lo / SEARCH_STEP), round(hi / SEARCH_STEP) + 1) * SEARCH_STEP, 2)
    if len(ts) >= 3:
        ra_at = np.clip(CubicSpline(ts, ra)(search), 0.0, 1.0)
        fa_at = np.clip(CubicSpline(ts, fa)(search), 0.0, 1.0)
    else:
        ra_at, fa_at = np.interp(search, ts, ra), np.interp(search, ts, fa)
    return _argmin_towards_larger_t(search, target_gap(ra_at, fa_at, targets))


def effective_region(points: Sequence[PointMetrics], targets: Targets) -> list[list[float]]:
    """Intervals of consecutive grid t values whose target gap beats the θ_p endpoint (t = 1)."""
    ordered = sorted(points, key=lambda p: p.t)
    end_gap = target_gap(ordered[-1].retain_accuracy, ordered[-1].forget_accuracy, targets)
    regions: list[list[float]] = []
    previous_inside = False
    for p in ordered:
        inside = target_gap(p.retain_accuracy, p.forget_accuracy, targets) < end_gap
        if inside and previous_inside:
            regions[-1][1] = p.t
        elif inside:
            regions.append([p.t, p.t])
        previous_inside = inside
    return regions
