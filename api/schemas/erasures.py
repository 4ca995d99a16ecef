"""Subject-wide erasures (domain/subject_erasure.py): what a caller sends, one or a bulk of them, and the
erasure with its requests and its aggregate state as the API answers it."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator

from api.schemas.base import Out, ProblemOut, Strict
from domain.inputs import JsonObject, Line, Lines, Url
from domain.lifecycle import State
from domain.subject_erasure import MAX_BULK_ITEMS, ErasureState
from unlearning.config import DEFAULT_BASE_METHOD


class ErasureIn(Strict):
    """Exactly one of subject_ids or sample_ids; no model: every model whose training split holds the rows gets
    a deletion request, each with these options."""

    subject_ids: Lines | None = Field(default=None, min_length=1, max_length=100_000)
    sample_ids: Lines | None = Field(default=None, min_length=1, max_length=100_000)
    external_id: Line | None = Field(
        default=None,
        max_length=200,
        description="The caller's reference: the same caller's external_id again returns that erasure.",
    )
    base_method: Line = Field(
        default=DEFAULT_BASE_METHOD, max_length=40, description="One of the base methods GET /v1/meta lists."
    )
    config: JsonObject = Field(default_factory=dict, description="As a deletion request's; unknown keys are 422.")
    selection: Literal["manual", "auto"] = "manual"
    callback_url: Url | None = Field(default=None, max_length=2000, description="Each request's callbacks go here.")
    received_at: datetime | None = Field(
        default=None, description="When the data subject's request reached you (default: now); due_at counts from it."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> ErasureIn:
        if (self.subject_ids is None) == (self.sample_ids is None):
            raise ValueError("give exactly one of subject_ids or sample_ids")
        return self


class BulkItemIn(ErasureIn):
    """One erasure of a bulk call: its external_id is required and makes the item idempotent."""

    subject_ids: Lines | None = Field(default=None, min_length=1, max_length=1_000)
    sample_ids: Lines | None = Field(default=None, min_length=1, max_length=1_000)
    external_id: Line = Field(min_length=1, max_length=200, description="Idempotency per item, per caller.")


class BulkErasuresIn(Strict):
    items: list[BulkItemIn] = Field(min_length=1, max_length=MAX_BULK_ITEMS)


class ErasureForgetOut(Out):
    kind: Literal["subject_ids", "sample_ids"]
    count: int = Field(description="ids named (the erasure keeps no id; each request keeps its forget set)")


class FiledRequestOut(Out):
    id: str
    model_id: str
    state: State


class SkippedModelOut(Out):
    model_id: str
    reason: Literal["already_erased", "model_invalid"]
    detail: str
    already_erased_by: dict[str, int] | None = None  # request id -> rows it erased


class ErasureOut(Out):
    id: str
    external_id: str | None
    state: ErasureState = Field(description="Derived from its requests' states (docs/api.md, subject-wide erasure)")
    forget: ErasureForgetOut
    requests: list[FiledRequestOut]
    skipped: list[SkippedModelOut]
    created_by: str
    created_at: datetime


class ItemProblemOut(ProblemOut):
    status: int


class BulkResultOut(Out):
    index: int
    external_id: str
    result: Literal["created", "existing", "error"]
    erasure: ErasureOut | None
    error: ItemProblemOut | None


class BulkErasuresOut(Out):
    items: list[BulkResultOut] = Field(description="One per item sent, in order.")
