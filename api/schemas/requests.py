"""Deletion requests: what a caller sends (forget set, config, a chosen point, a deadline extension) and the
request, its progress and its curve as the API answers them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import Field, StrictInt, computed_field, field_validator, model_validator

from api.schemas.base import Out, ProblemOut, Strict
from domain.inputs import JsonObject, Line, Lines, Prose, Url
from domain.lifecycle import MAX_EXTENSION_DAYS, OPEN, State
from unlearning.config import DEFAULT_BASE_METHOD


class ForgetIn(Strict):
    """Exactly one of sample_ids, subject_ids or classes."""

    sample_ids: Lines | None = Field(default=None, min_length=1, max_length=1_000_000)
    subject_ids: Lines | None = Field(default=None, min_length=1, max_length=1_000_000)
    classes: list[Annotated[StrictInt, Field(ge=0, le=100_000)]] | None = Field(
        default=None, min_length=1, max_length=100_000
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> ForgetIn:
        given = [name for name in ("sample_ids", "subject_ids", "classes") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of sample_ids, subject_ids or classes")
        return self

    def selector(self) -> tuple[str, list[Any]]:
        for name in ("sample_ids", "subject_ids", "classes"):
            value = getattr(self, name)
            if value is not None:
                return name, value
        raise AssertionError("validated above")


class DeletionRequestIn(Strict):
    model_id: Line = Field(max_length=40)
    forget: ForgetIn
    base_method: Line = Field(
        default=DEFAULT_BASE_METHOD, max_length=40, description="One of the base methods GET /v1/meta lists."
    )
    config: JsonObject = Field(default_factory=dict, description="Every key optional; unknown keys are 422.")
    selection: Literal["manual", "auto"] = "manual"
    external_id: Line | None = Field(default=None, max_length=200)
    callback_url: Url | None = Field(default=None, max_length=2000)
    received_at: datetime | None = Field(
        default=None, description="When the data subject's request reached you (default: now); due_at counts from it."
    )


class SelectionIn(Strict):
    t: float = Field(ge=0.0, le=1.0, strict=True)  # strict: `true` is not t = 1
    acknowledge: Prose | None = Field(
        default=None,
        max_length=2000,
        description="Needed when the point fails the erasure criterion: text beginning with "
        "'erasure criterion not met'.",
    )


class ExtensionIn(Strict):
    days: int = Field(ge=1, le=MAX_EXTENSION_DAYS, strict=True)
    reason: Prose = Field(min_length=1, max_length=2000)


class ApprovalIn(Strict):
    decision: Literal["approve", "deny"]
    reason: Prose = Field(min_length=1, max_length=2000, description="Why: kept in the audit trail and the report.")

    @field_validator("reason")
    @classmethod
    def _not_blank(cls, reason: str) -> str:
        if not reason.strip():
            raise ValueError("the reason is blank: say why")
        return reason


class ProgressOut(Out):
    phase: str
    fraction: float = Field(description="of the current phase, 0..1")
    epoch: int | None = None
    epochs: int | None = None
    overall: float | None = Field(None, description="of the whole job (mask, base, curve, evaluate), 0..1")
    eta_seconds: float | None = Field(None, description="estimated seconds left in the job; null until 1% is done")


class CurvePointOut(Out):
    t: float
    forget_accuracy: float
    unlearning_accuracy: float
    retain_accuracy: float
    test_accuracy: float
    mia_efficacy: float
    forgotten_class_test_accuracy: float | None = None  # class-wise forgetting only
    std_errors: dict[str, float] | None = None  # {metric: binomial std error}; null: measured before they were kept
    rows: dict[str, int] | None = None  # {split: rows measured}


class CurveOut(Out):
    points: list[CurvePointOut]  # measured on every forget row and sampled retain / test rows (see `rows`)
    recommended_t: float
    recommended_point: CurvePointOut | None = None  # φ(recommended_t) measured on every row (docs/evaluation.md)
    effective_region: list[list[float]]
    targets: dict[str, float | None]


class SelectionOut(Out):
    t: float
    model_version: int | None
    selected_by: str | None
    selected_at: datetime | None
    acknowledgement: str | None  # set when the point did not meet the erasure criterion


class ExtensionOut(Out):
    days: int
    reason: str
    by: str
    at: datetime


class ApprovalOut(Out):
    decision: Literal["approved", "denied"]
    by: str = Field(description="the approving key's name (never the submitter's)")
    at: datetime
    reason: str


class ErasureCriterionOut(Out):
    forget_tolerance: float
    mia_tolerance: float
    # Stored before the stronger checks existed: what those requests were judged by (domain/erasure.py).
    relearn_tolerance: float = 0.05
    membership_tolerance: float = 0.05
    require_relearning: bool = False
    require_membership: bool = False
    undecidable: Literal["publish", "withhold"] = "publish"


class DeletionRequestOut(Out):
    id: str
    model_id: str
    model_version: int
    state: State
    external_id: str | None
    base_method: str
    config: dict[str, Any]
    selection_mode: Literal["manual", "auto"]
    callback_url: str | None
    forget_count: int
    forget_fingerprint: str
    progress: ProgressOut
    curve: CurveOut | None
    selection: SelectionOut | None
    error: ProblemOut | None
    erasure_criterion: ErasureCriterionOut
    job_id: str | None = Field(
        description="coalescing: the request whose job runs this one with others (null: its own job)"
    )
    created_at: datetime
    received_at: datetime
    due_at: datetime
    due_extension: ExtensionOut | None
    approval: ApprovalOut | None = Field(
        description="the approval gate's decision; null when none was required or it is still awaited"
    )
    started_at: datetime | None
    finished_at: datetime | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def overdue(self) -> bool:
        return self.state in OPEN and self.due_at < datetime.now(UTC)
