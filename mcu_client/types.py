"""What the API answers, as pydantic models. Unknown fields are kept (`extra="allow"`), so a newer server's
additions reach the caller instead of failing validation."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

# The final states of the server release this client ships with, for `DeletionRequest.finished` offline only:
# `Client.meta()` serves the server's own, which `Client.wait` uses (tests/api/test_meta.py checks they agree).
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
    require_approval: bool = False  # its deletion requests wait for another key's approval
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
    fraction: float  # of the current phase
    epoch: int | None = None
    epochs: int | None = None
    overall: float | None = None  # of the whole job; None from older servers and before the job starts
    eta_seconds: float | None = None  # the service's estimate of the seconds left in the job


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


class PointAttack(Body):
    """The auditor's attacks on φ(t) before choosing it: queued → running → succeeded | failed."""

    t: float
    state: str
    requested_by: str
    requested_at: datetime
    finished_at: datetime | None = None
    metrics: dict[str, Any] | None = None  # φ(t) on every row, as publishing it would measure
    evidence: dict[str, Any] | None = None  # relearning, feature probe, per-sample membership
    criterion: dict[str, Any] | None = None  # {"met", "reasons"}
    error: dict[str, Any] | None = None


class PointAttacks(Body):
    items: list[PointAttack]


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


class Approval(Body):
    decision: str  # approved | denied
    by: str  # the deciding key's name: never the submitter's
    at: datetime
    reason: str


class ErasureCriterion(Body):
    forget_tolerance: float
    mia_tolerance: float
    # Stored before the stronger checks existed: what those requests were judged by (domain/erasure.py).
    relearn_tolerance: float = 0.05
    membership_tolerance: float = 0.05
    require_relearning: bool = False
    require_membership: bool = False
    undecidable: Literal["publish", "withhold"] = "publish"


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
    approval: Approval | None = None  # the approval gate's decision (null: none required, or still awaited)
    overdue: bool
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES


class Timings(Body):
    """Seconds per phase of the job that trained and measured the curve (its last run, after any resume)."""

    mask: float
    base: float
    curve: float
    evaluate: float
    total: float


class Rollback(Body):
    epoch: int  # the epoch whose weights became non-finite; it was trained again
    lr: float  # the halved learning rate training went on with


class Training(Body):
    """The curve training (θ_c): loss per epoch, β used, divergence rollbacks."""

    epoch_losses: list[float | None] = []  # mean CE(retain) − β·CE(forget) per epoch; None: no batch stepped
    beta_counts: dict[str, int]  # batches per β value, e.g. {"0.5": 40, "0.0": 8}
    rollbacks: list[Rollback] = []
    batches: int
    skipped_nonfinite_batches: int
    final_lr: float | None = None
    device: str | None = None  # "cuda × 4": data-parallel on 4 devices
    processes: int | None = None  # that trained the base method and the curve (MCU_DEVICES_PER_JOB)
    rank_restarts: int | None = None  # data-parallel processes started again after one died
    resumed_from_epoch: int | None = None  # the checkpoint epoch the last run of the curve training began at
    grid_points_by_worker: dict[str, int] | None = None  # with MCU_GRID_FANOUT: points measured per worker
    recommended_point_parts_by_worker: dict[str, int] | None = None  # with MCU_GRID_FANOUT: full-set parts per worker


class DeletionRequestDetail(DeletionRequest):
    """`GET /v1/deletion-requests/{id}`: the request plus its job's diagnostics (None until the job made them)."""

    timings: Timings | None = None
    last_heartbeat_at: datetime | None = None  # when a worker last reported on it (heartbeat, or its last step)
    training: Training | None = None


class BaseMethod(Body):
    name: str
    description: str
    defaults: dict[str, Any]  # the settings the method uses, with its defaults
    config_schema: dict[str, Any]  # JSON Schema of a request's `config.base` for this method


class Meta(Body):
    """`GET /v1/meta`: the server's request states and transitions, and the base methods it offers."""

    states: list[str]
    transitions: dict[str, list[str]]  # state → the states it may move to
    open_states: list[str]
    terminal_states: list[str]
    base_methods: list[BaseMethod]
    default_base_method: str
    # Retention: superseded versions that keep their weights once a later version erased data (None: an older
    # server that does not say; it deletes them all unless told otherwise)
    keep_superseded_versions: int | None = None


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
        """key id -> public key, what `mcu_client.verify_report` and `mcu reports verify` take."""
        return {key.key_id: key.public_key for key in self.keys}


class Identity(Body):
    """`GET /v1/keys/me`: the calling key's name and scopes."""

    name: str
    scopes: list[str]


T = TypeVar("T")


class Page(Body, Generic[T]):
    items: list[T]
    next_page_token: str | None


class FiledRequest(Body):
    id: str
    model_id: str
    state: str


class SkippedModel(Body):
    model_id: str
    reason: str  # already_erased | model_invalid
    detail: str
    already_erased_by: dict[str, int] | None = None  # request id -> rows it erased


class Erasure(Body):
    """A subject-wide erasure: one deletion request per model whose training data holds the subjects (or
    samples) it names, and their aggregate state (running | awaiting_selection | succeeded | failed | cancelled)."""

    id: str
    external_id: str | None
    state: str
    forget: dict[str, Any]  # {"kind": "subject_ids" | "sample_ids", "count": ids named}
    requests: list[FiledRequest]
    skipped: list[SkippedModel]
    created_by: str
    created_at: datetime


class BulkResult(Body):
    """One item of a bulk intake: `created`, `existing` (its external_id made that erasure before) or `error`."""

    index: int
    external_id: str
    result: str
    erasure: Erasure | None
    error: Problem | None
