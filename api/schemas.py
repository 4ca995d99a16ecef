"""Request and response bodies of API v1 (the contract is shared/API.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, computed_field, model_validator

from domain.catalog import ModelState
from domain.inputs import JsonObject, Line, Lines, Prose, Url
from domain.lifecycle import MAX_EXTENSION_DAYS, OPEN, State


class Strict(BaseModel):
    """A request body. Every text field is a `Line`/`Lines`/`Prose`/`Url` and free JSON a `JsonObject`
    (domain/inputs.py; tests/api/test_strict_input.py checks that no field is left out)."""

    # extra: a typo in a field name is a 422, never silently ignored; NaN and Infinity are never numbers.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Out(BaseModel):
    """A response body, read straight from the ORM row's attributes. A lone surrogate stored before the input
    checks is replaced where the body is rendered, once per response (api/deps.py `SessionRoute`)."""

    model_config = ConfigDict(from_attributes=True)


class DatasetOut(Out):
    id: str
    name: str
    description: str | None
    num_train: int
    num_test: int
    num_classes: int
    input_shape: list[int | None] = Field(description="[C, H, W]; encoded images: [C, null, null] (any size)")
    input_encoding: Literal["tensor", "encoded"] = Field(description="encoded: PNG / JPEG bytes (docs/datasets.md)")
    created_at: datetime


class ProblemOut(Out):
    type: str
    title: str
    detail: str
    errors: list[dict[str, Any]] | None = None


class PreprocessingOut(Out):
    preset: Literal["unit", "imagenet", "dataset"] | None
    mean: list[float] | None = Field(description="null only until a worker computed a 'dataset' preset's values")
    std: list[float] | None


# {"resize": int | [h, w], "center_crop": int | [h, w]}, as declared (docs/inputs.md)
InputTransform = dict[str, int | list[int]]
# Steps applied to training batches only, in order; NULL (rows from before the field): none.
Augmentation = Annotated[list[str], BeforeValidator(lambda steps: steps or [])]


class ModelOut(Out):
    id: str
    name: str
    architecture: str
    architecture_kwargs: dict[str, Any]
    num_classes: int
    dataset_id: str
    preprocessing: PreprocessingOut
    input_transform: InputTransform | None = Field(description="resize / center crop before the preprocessing")
    augmentation: Augmentation
    input_adapter: str | None = Field(description="how stored images become model input, once validated")
    current_version: int
    state: ModelState
    error: ProblemOut | None
    warnings: list[str]
    created_at: datetime


class VersionOut(Out):
    version: int
    sha256: str
    parent_version: int | None
    deletion_request_id: str | None
    t: float | None
    metrics: dict[str, Any] | None
    preprocessing: PreprocessingOut | None
    input_transform: InputTransform | None = Field(description="the model's, when this version was made")
    augmentation: Augmentation
    weights_deleted_at: datetime | None = Field(description="set when the retention policy deleted the weights "
                                                "(GET .../weights then answers 410)")
    created_at: datetime


class ForgetIn(Strict):
    """Exactly one of sample_ids, subject_ids or classes."""

    sample_ids: Lines | None = Field(default=None, min_length=1, max_length=1_000_000)
    subject_ids: Lines | None = Field(default=None, min_length=1, max_length=1_000_000)
    classes: list[Annotated[StrictInt, Field(ge=0, le=100_000)]] | None = Field(default=None, min_length=1,
                                                                                max_length=100_000)

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
    base_method: Line = Field(default="rl", max_length=40, description="ft | ga | neggrad_plus | rl | salun")
    config: JsonObject = Field(default_factory=dict, description="Every key optional; unknown keys are 422.")
    selection: Literal["manual", "auto"] = "manual"
    external_id: Line | None = Field(default=None, max_length=200)
    callback_url: Url | None = Field(default=None, max_length=2000)
    received_at: datetime | None = Field(default=None, description="When the data subject's request reached "
                                         "you (default: now); due_at counts from it.")


class ProgressOut(Out):
    phase: str
    fraction: float
    epoch: int | None = None
    epochs: int | None = None


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


class ErasureCriterionOut(Out):
    forget_tolerance: float
    mia_tolerance: float


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
    job_id: str | None = Field(description="coalescing: the request whose job runs this one with others "
                               "(null: its own job)")
    created_at: datetime
    received_at: datetime
    due_at: datetime
    due_extension: ExtensionOut | None
    started_at: datetime | None
    finished_at: datetime | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def overdue(self) -> bool:
        return self.state in OPEN and self.due_at < datetime.now(UTC)


class SelectionIn(Strict):
    t: float = Field(ge=0.0, le=1.0, strict=True)  # strict: `true` is not t = 1
    acknowledge: Prose | None = Field(default=None, max_length=2000, description=(
        "Needed when the point fails the erasure criterion: text beginning with 'erasure criterion not met'."))


class ExtensionIn(Strict):
    days: int = Field(ge=1, le=MAX_EXTENSION_DAYS, strict=True)
    reason: Prose = Field(min_length=1, max_length=2000)


class SigningKeyOut(Out):
    key_id: str
    algorithm: str = "Ed25519"
    public_key: str  # raw 32 bytes, base64
    created_at: datetime
    retired_at: datetime | None


class SigningKeysOut(Out):
    current: SigningKeyOut
    keys: list[SigningKeyOut]  # the current one and every retired one: old reports stay verifiable


class EventOut(Out):
    at: datetime
    type: str
    state: str | None
    actor: str | None
    detail: dict[str, Any] | None
    prev_hash: str
    hash: str


T = TypeVar("T")


class Page(Out, Generic[T]):
    items: list[T]
    next_page_token: str | None


