"""The auditor's attacks on a curve point, asked for before choosing one (domain/point_attacks.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from api.schemas.base import Out, Strict


class PointAttackIn(Strict):
    t: float = Field(ge=0.0, le=1.0, strict=True)  # strict: `true` is not t = 1; kept to 4 decimals


class PointCriterionOut(Out):
    met: bool  # the erasure criterion, the attacks its config requires included
    reasons: list[str]  # why it is not met (empty when met)


class PointAttackOut(Out):
    t: float
    state: Literal["queued", "running", "succeeded", "failed"]
    requested_by: str
    requested_at: datetime
    finished_at: datetime | None
    metrics: dict[str, Any] | None  # φ(t) measured on every row, as a published version's are
    evidence: dict[str, Any] | None  # relearning, feature probe, per-sample membership (docs/evidence.md)
    criterion: PointCriterionOut | None
    error: dict[str, Any] | None  # a problem (type, title, detail) when failed


class PointAttacksOut(Out):
    items: list[PointAttackOut]  # by t
