"""The erasure criterion: does a point on the curve show that the forget set was erased?

Judged against the targets the worker estimates from θ_o alone (what a model that never saw the forget set
would show; unlearning/pipeline.py `derive_targets`), one-sided: forgetting *more* than a retrained model is
not a failure of erasure.
- forget accuracy ≤ its target + `forget_tolerance` + sampling noise
- MIA efficacy ≥ its target − `mia_tolerance` − sampling noise
- with `require_relearning`: forget accuracy after the relearning check (unlearning/attacks.py) ≤ its target +
  `relearn_tolerance` + sampling noise
- with `require_membership`: the share of forget rows more exposed than 95% of non-members (per-sample
  membership scores) ≤ 0.05 + `membership_tolerance` + sampling noise
Sampling noise is two binomial standard errors of the target's share over the rows measured: on a 5-row forget
set one row more or less moves accuracy by 0.2, which no tolerance should be asked to absorb. The two stronger
checks are measured when a point is materialised; a selection's estimate is judged on the first two.

`power` states what the criterion can tell at this forget-set size. When it cannot tell (the original model
itself passes), `undecidable` is the policy: "publish" states it in the events and the report, "withhold"
treats it as a failure (auto selection withheld, a manual one needs `acknowledge`).

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
TOLERANCE_KEYS = ("forget_tolerance", "mia_tolerance", "relearn_tolerance", "membership_tolerance")
REQUIREMENT_KEYS = ("require_relearning", "require_membership")
UNDECIDABLE_POLICIES = ("publish", "withhold")
CRITERION_KEYS = (*TOLERANCE_KEYS, *REQUIREMENT_KEYS, "undecidable")
# What a criterion stored before a key existed meant (requests filed before the stronger checks).
STORED_DEFAULTS: dict[str, Any] = {
    "relearn_tolerance": 0.05,
    "membership_tolerance": 0.05,
    "require_relearning": False,
    "require_membership": False,
    "undecidable": "publish",
}
METRICS = ("forget_accuracy", "retain_accuracy", "test_accuracy", "mia_efficacy")
EXPOSED_BASELINE = 0.05  # the share of non-members above their own 95th percentile


@dataclass(frozen=True)
class Judgement:
    met: bool
    reasons: list[str]

    @property
    def acknowledgement(self) -> str:
        """What an operator sends to publish the point anyway."""
        return f"{ACKNOWLEDGE_PREFIX}: " + "; ".join(self.reasons)


def criterion_for(override: Any, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The request's criterion: `config.erasure` over the service's settings; 422 naming a bad key."""
    if override is None:
        override = {}
    if not isinstance(override, dict):
        raise invalid("config.erasure must be an object", [{"loc": ["config", "erasure"], "msg": "not an object"}])
    unknown = sorted(set(override) - set(CRITERION_KEYS))
    if unknown:
        raise invalid(
            f"unknown key config.erasure.{unknown[0]} (known: {', '.join(CRITERION_KEYS)})",
            [{"loc": ["config", "erasure", unknown[0]], "msg": "unknown key"}],
        )
    criterion = {key: defaults[key] for key in CRITERION_KEYS}
    for key, value in override.items():
        if key in TOLERANCE_KEYS and (
            isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1
        ):
            raise _bad(key, "must be a number in [0, 1]")
        if key in REQUIREMENT_KEYS and not isinstance(value, bool):
            raise _bad(key, "must be true or false")
        if key == "undecidable" and value not in UNDECIDABLE_POLICIES:
            raise _bad(key, f"must be one of {', '.join(UNDECIDABLE_POLICIES)}")
        criterion[key] = float(value) if key in TOLERANCE_KEYS else value
    return criterion


def _bad(key: str, message: str) -> Exception:
    return invalid(f"config.erasure.{key} {message}", [{"loc": ["config", "erasure", key], "msg": message}])


def setting(criterion: Mapping[str, Any], key: str) -> Any:
    """A criterion's value, with what it meant for one stored before the key existed."""
    return criterion.get(key, STORED_DEFAULTS.get(key))


def _noise(target: float, rows: int) -> float:
    return 2.0 * math.sqrt(target * (1.0 - target) / max(1, rows))


# name: (what it measures, its target in the targets (None: EXPOSED_BASELINE), tolerance key, direction (+1:
# fails above target + margin, −1: below target − margin), the criterion's flag that requires it)
CHECKS: dict[str, tuple[str, str | None, str, float, str | None]] = {
    "forget_accuracy": ("forget accuracy", "forget_accuracy", "forget_tolerance", 1.0, None),
    "mia_efficacy": ("MIA efficacy", "mia_efficacy", "mia_tolerance", -1.0, None),
    "relearned_forget_accuracy": (
        "forget accuracy after relearning",
        "forget_accuracy",
        "relearn_tolerance",
        1.0,
        "require_relearning",
    ),
    "exposed_share": ("share of exposed forget rows", None, "membership_tolerance", 1.0, "require_membership"),
}


def measured(
    metrics: Mapping[str, Any] | None, evidence: Mapping[str, Any] | None, label: str, forget_rows: int
) -> dict[str, tuple[float, int]]:
    """Each check's value for one model and the rows it was measured on: the population metrics from `metrics`,
    the stronger checks from `evidence` (unlearning/attacks.py) under `label` (published, base, original)."""
    values: dict[str, tuple[float, int]] = {}
    if metrics is not None:
        values |= {name: (float(metrics[name]), forget_rows) for name in ("forget_accuracy", "mia_efficacy")}
    relearning = (evidence or {}).get("relearning")
    run = "k_shot" if relearning and "k_shot" in relearning else "retain_only"  # class-wise: the stronger attack
    if relearning and label in relearning[run]:
        rows = relearning["protocol"]["forget_rows_measured"][run]
        values["relearned_forget_accuracy"] = (relearning[run][label]["forget_accuracy"][-1], rows)
    membership = (evidence or {}).get("membership")
    if membership and label in membership:
        values["exposed_share"] = (membership[label]["exposed_share"], membership[label]["rows"]["forget"])
    return values


def _active(
    targets: Mapping[str, float | None], criterion: Mapping[str, Any]
) -> list[tuple[str, str, float, float, float]]:
    """(name, what, target, tolerance, direction) of each check this criterion applies."""
    active = []
    for name, (what, target_key, tolerance_key, sign, flag) in CHECKS.items():
        target = EXPOSED_BASELINE if target_key is None else targets.get(target_key)
        if target is None or (flag is not None and not setting(criterion, flag)):
            continue
        active.append((name, what, target, float(setting(criterion, tolerance_key)), sign))
    return active


def judge(
    point: Mapping[str, Any],
    targets: Mapping[str, float | None],
    forget_rows: int,
    criterion: Mapping[str, Any],
    strength: Mapping[str, Any] | None = None,
) -> Judgement:
    """The criterion on a point (its "evidence", when measured, for the stronger checks; a check not measured yet
    is left to materialisation). `strength` (`power`'s answer): an undecidable one fails under "withhold"."""
    values = measured(point, point.get("evidence"), "published", forget_rows)
    reasons = []
    for name, what, target, tolerance, sign in _active(targets, criterion):
        if name not in values:
            continue
        value, rows = values[name]
        margin = tolerance + _noise(target, rows)
        if sign * (value - target) > margin + 1e-9:
            op = "+" if sign > 0 else "−"
            reasons.append(
                f"{what} {value:.3f} is {'above' if sign > 0 else 'below'} {target + sign * margin:.3f} (target "
                f"{target:.3f} {op} tolerance {tolerance:.3f} {op} sampling noise)"
            )
    if strength is not None and strength["decidable"] is False and setting(criterion, "undecidable") == "withhold":
        reasons.append(strength["statement"] + " (the undecidable policy is withhold)")
    return Judgement(not reasons, reasons)


def power(
    original: Mapping[str, float] | None,
    targets: Mapping[str, float | None],
    forget_rows: int,
    criterion: Mapping[str, Any],
    evidence: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What the criterion can tell at this forget-set size: per check, the smallest difference from its target it
    detects (tolerance + sampling noise) and whether the original model (`original`: the curve's t = 0 point;
    `evidence`'s "original" for the stronger checks) fails it. When the original passes every check the criterion
    cannot tell an erased forget set from one that was never touched (20 random rows: the noise alone is wider
    than any accuracy gap), and `statement` says so instead of letting "met" stand unexplained. `decidable` is
    None while a required stronger check waits for materialisation and nothing measured so far decides."""
    values = measured(original, evidence, "original", forget_rows)
    checks: dict[str, dict[str, Any]] = {}
    for name, _, target, tolerance, sign in _active(targets, criterion):
        if name not in values and CHECKS[name][4] is not None:
            checks[name] = {"detectable_difference": None, "original": None, "decidable": None}
            continue
        value, rows = values.get(name, (None, forget_rows))
        margin = tolerance + _noise(target, rows)
        checks[name] = {
            "detectable_difference": round(margin, 4),
            "original": value,
            "decidable": value is not None and sign * (value - target) > margin + 1e-9,
        }
    decided = [c["decidable"] for c in checks.values()]
    decidable = True if any(decided) else (None if None in decided else False)
    if decidable:
        statement = f"decidable at {forget_rows} forget rows: the original model fails the criterion; " + ", ".join(
            f"{CHECKS[name][0]} detects a difference of {c['detectable_difference']:.3f} from its target"
            for name, c in checks.items()
            if c["detectable_difference"] is not None
        )
    elif decidable is None:
        statement = (
            f"not decided by the population metrics at {forget_rows} forget rows; the required stronger checks "
            "decide when the point is materialised"
        )
    else:
        statement = (
            f"undecidable at {forget_rows} forget rows: the original model itself passes the criterion (each "
            "difference it could detect is wider than the original's distance from the target), so 'met' shows no "
            "erasure; a larger forget set or stronger checks are needed to decide"
        )
    if targets.get("mia_efficacy") is None:
        statement += (
            "; MIA efficacy is not judged: it has no target (the original model's attack called the same rows "
            "non-member in shares that depended on the rows it was trained on: a coin flip, docs/algorithm.md §4; "
            "or the operator's targets name none)"
        )
    return {"decidable": decidable, "checks": checks, "statement": statement}


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
    criterion: Mapping[str, Any],
    strength: Mapping[str, Any] | None = None,
) -> tuple[float | None, Judgement]:
    """The t `auto` selection publishes: the recommended one if it meets the criterion, else the first of the
    measured points in `ranked` (the caller orders them best first, by the library's estimated gap to the
    targets) that meets it; None (with the recommended point's judgement) when no point does."""
    recommended = judge(point_at(ranked, recommended_t), targets, forget_rows, criterion, strength)
    if recommended.met:
        return recommended_t, recommended
    passing = next((p for p in ranked if judge(p, targets, forget_rows, criterion, strength).met), None)
    return (None if passing is None else float(passing["t"])), recommended
