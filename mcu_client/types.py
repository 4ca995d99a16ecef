"""What the API answers, as pydantic models. Unknown fields are kept (`extra="allow"`), so a newer server's
additions reach the caller instead of failing validation."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

TERMINAL_STATES = ("succeeded", "failed", "cancelled")


class Body(BaseModel):
    model_config = ConfigDict(extra="allow")


class Problem(Body):
    type: str
    title: str
    detail: str
    errors: list[dict[str, Any]] | None = None


class Dataset(Body):
    id: str
    name: str
    description: str | None
    num_train: int
    num_test: int
    num_classes: int
    input_shape: list[int | None]  # [C, None, None] for encoded images (any size)
    input_encoding: str = "tensor"  # or "encoded": PNG / JPEG bytes per row
    created_at: datetime


class Preprocessing(Body):
    preset: str | None
    mean: list[float] | None
    std: list[float] | None


class Model(Body):
    id: str
    name: str
    architecture: str
    architecture_kwargs: dict[str, Any]
    num_classes: int
    dataset_id: str
    preprocessing: Preprocessing
    # {"resize": int | [h, w], "center_crop": int | [h, w]}: before the preprocessing, wherever the model sees data
    input_transform: dict[str, Any] | None = None
    augmentation: list[str] = []  # steps on training batches only
    input_adapter: str | None
    current_version: int
    state: str  # validating | ready | invalid
    error: Problem | None
    warnings: list[str]
    created_at: datetime


class Version(Body):
    version: int
    sha256: str
    parent_version: int | None
    deletion_request_id: str | None
    t: float | None
    metrics: dict[str, Any] | None
    preprocessing: Preprocessing | None
    input_transform: dict[str, Any] | None = None  # the model's, when this version was made
    augmentation: list[str] = []
    weights_deleted_at: datetime | None = None  # retention policy: GET .../weights then raises `Gone` (410)
    created_at: datetime


class Progress(Body):
    phase: str
    fraction: float
    epoch: int | None = None
    epochs: int | None = None


class CurvePoint(Body):
    t: float
    forget_accuracy: float
    unlearning_accuracy: float
    retain_accuracy: float
    test_accuracy: float
    mia_efficacy: float
    forgotten_class_test_accuracy: float | None = None  # class-wise forgetting only
    std_errors: dict[str, float] | None = None  # {metric: binomial standard error}; None from older servers
    rows: dict[str, int] | None = None  # {split: rows the metrics were measured on}


class Curve(Body):
    points: list[CurvePoint]  # every forget row, sampled retain and test rows
    recommended_t: float
    recommended_point: CurvePoint | None = None  # φ(recommended_t) measured on every row
    effective_region: list[list[float]]
    targets: dict[str, float | None]


class Selection(Body):
    t: float
    model_version: int | None
    selected_by: str | None
    selected_at: datetime | None
    acknowledgement: str | None  # set when the point did not meet the erasure criterion


class Extension(Body):
    days: int
    reason: str
    by: str
    at: datetime


class ErasureCriterion(Body):
    forget_tolerance: float
    mia_tolerance: float


class DeletionRequest(Body):
    id: str
    model_id: str
    model_version: int
    state: str
    external_id: str | None
    base_method: str
    config: dict[str, Any]
    selection_mode: str
    callback_url: str | None
    forget_count: int
    forget_fingerprint: str
    progress: Progress
    curve: Curve | None
    selection: Selection | None
    error: Problem | None
    erasure_criterion: ErasureCriterion
    job_id: str | None = None  # coalescing: the request whose job runs this one with others
    created_at: datetime
    received_at: datetime
    due_at: datetime
    due_extension: Extension | None
    overdue: bool
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES


class Event(Body):
    at: datetime
    type: str
    state: str | None
    actor: str | None
    detail: dict[str, Any] | None
    prev_hash: str  # the request's events form a hash chain (`mcu audit verify`)
    hash: str


class SigningKey(Body):
    key_id: str
    algorithm: str
    public_key: str  # raw Ed25519 public key, base64
    created_at: datetime
    retired_at: datetime | None


class SigningKeys(Body):
    """`GET /v1/signing-key`: the key signing reports now, and every key that ever did."""

    current: SigningKey
    keys: list[SigningKey]

    def trusted(self) -> dict[str, str]:
        """key id -> public key, what `domain.signing.verify` and `mcu reports verify` take."""
        return {key.key_id: key.public_key for key in self.keys}


class Identity(Body):
    """`GET /v1/keys/me`: the calling key's name and scopes."""

    name: str
    scopes: list[str]


T = TypeVar("T")


class Page(Body, Generic[T]):
    items: list[T]
    next_page_token: str | None
