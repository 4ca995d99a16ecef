"""The erasure criterion: does a point on the curve show that the forget set was erased?

Judged against the targets the worker estimates from θ_o alone (what a model that never saw the forget set
would show; unlearning/pipeline.py `derive_targets`), one-sided: forgetting *more* than a retrained model is
not a failure of erasure.
- forget accuracy ≤ its target + `forget_tolerance` + sampling noise
- MIA efficacy ≥ its target − `mia_tolerance` − sampling noise
Sampling noise is two binomial standard errors of the target's share over the forget set's rows: on a
5-row forget set one row more or less moves accuracy by 0.2, which no tolerance should be asked to absorb.

`auto` selection publishes only a point that meets the criterion; a manual selection of one that does not
needs `acknowledge` to begin with ACKNOWLEDGE_PREFIX, and the report says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from domain.problems import invalid

ACKNOWLEDGE_PREFIX = "erasure criterion not met"
TOLERANCE_KEYS = ("forget_tolerance", "mia_tolerance")
METRICS = ("forget_accuracy", "retain_accuracy", "test_accuracy", "mia_efficacy")


@dataclass(frozen=True)
class Judgement:
    met: bool
    reasons: list[str]

    @property
    def acknowledgement(self) -> str:
        """What an operator sends to publish the point anyway."""
        return f"{ACKNOWLEDGE_PREFIX}: " + "; ".join(self.reasons)


def criterion_for(override: Any, defaults: Mapping[str, float]) -> dict[str, float]:
    """The request's tolerances: `config.erasure` over the service's settings; 422 naming a bad key."""
    if override is None:
        override = {}
    if not isinstance(override, dict):
        raise invalid("config.erasure must be an object", [{"loc": ["config", "erasure"], "msg": "not an object"}])
    unknown = sorted(set(override) - set(TOLERANCE_KEYS))
    if unknown:
        raise invalid(
            f"unknown key config.erasure.{unknown[0]} (known: {', '.join(TOLERANCE_KEYS)})",
            [{"loc": ["config", "erasure", unknown[0]], "msg": "unknown key"}],
        )
    criterion = {key: float(defaults[key]) for key in TOLERANCE_KEYS}
    for key, value in override.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            raise invalid(
                f"config.erasure.{key} must be a number in [0, 1]",
                [{"loc": ["config", "erasure", key], "msg": "must be a number in [0, 1]"}],
            )
        criterion[key] = float(value)
    return criterion


def _noise(target: float, rows: int) -> float:
    return 2.0 * math.sqrt(target * (1.0 - target) / max(1, rows))


def judge(
    point: Mapping[str, float], targets: Mapping[str, float | None], forget_rows: int, criterion: Mapping[str, float]
) -> Judgement:
    reasons = []
    fa_target = targets.get("forget_accuracy")
    if fa_target is not None:
        allowed = fa_target + criterion["forget_tolerance"] + _noise(fa_target, forget_rows)
        if point["forget_accuracy"] > allowed + 1e-9:
            reasons.append(
                f"forget accuracy {point['forget_accuracy']:.3f} is above {allowed:.3f} (target "
                f"{fa_target:.3f} + tolerance {criterion['forget_tolerance']:.3f} + sampling noise)"
            )
    mia_target = targets.get("mia_efficacy")
    if mia_target is not None:
        floor = mia_target - criterion["mia_tolerance"] - _noise(mia_target, forget_rows)
        if point["mia_efficacy"] < floor - 1e-9:
            reasons.append(
                f"MIA efficacy {point['mia_efficacy']:.3f} is below {floor:.3f} (target "
                f"{mia_target:.3f} − tolerance {criterion['mia_tolerance']:.3f} − sampling noise)"
            )
    return Judgement(not reasons, reasons)


def point_at(points: Sequence[Mapping[str, Any]], t: float) -> dict[str, float]:
    """A point's metrics: measured when `t` is on the grid, else linear between its measured neighbours
    (the estimate an operator sees; the published version's metrics are measured at `t` itself)."""
    ordered = sorted(points, key=lambda p: p["t"])
    for left, right in pairwise(ordered):
        if left["t"] <= t <= right["t"]:
            w = 0.0 if right["t"] == left["t"] else (t - left["t"]) / (right["t"] - left["t"])
            return {"t": t} | {m: (1 - w) * left[m] + w * right[m] for m in METRICS}
    nearest = min(ordered, key=lambda p: abs(p["t"] - t))
    return {"t": t} | {m: nearest[m] for m in METRICS}


def auto_choice(
    ranked: Sequence[Mapping[str, Any]],
    recommended_t: float,
    targets: Mapping[str, float | None],
    forget_rows: int,
    criterion: Mapping[str, float],
) -> tuple[float | None, Judgement]:
    """The t `auto` selection publishes: the recommended one if it meets the criterion, else the first of the
    measured points in `ranked` (the caller orders them best first, by the library's estimated gap to the
    targets) that meets it; None (with the recommended point's judgement) when no point does."""
    recommended = judge(point_at(ranked, recommended_t), targets, forget_rows, criterion)
    if recommended.met:
        return recommended_t, recommended
    passing = next((p for p in ranked if judge(p, targets, forget_rows, criterion).met), None)
    return (None if passing is None else float(passing["t"])), recommended
