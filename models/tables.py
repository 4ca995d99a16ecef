"""The service's tables (SQLAlchemy 2.0, typed). The schema itself only changes through migrations/."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """Opaque, URL-safe ids with a readable type prefix (ds_, mdl_, req_, key_)."""
    return f"{prefix}_{secrets.token_hex(10)}"


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite hands back naive values otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.astimezone(UTC) if value is not None and value.tzinfo else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map: ClassVar = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime()}


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    num_train: Mapped[int] = mapped_column(Integer)
    num_test: Mapped[int] = mapped_column(Integer)
    num_classes: Mapped[int] = mapped_column(Integer)
    input_shape: Mapped[list[Any]] = mapped_column(JSON)
    input_dtype: Mapped[str] = mapped_column(String(16))
    # "tensor": shards hold an `inputs` tensor [N, C, H, W]; "encoded": PNG / JPEG bytes per row (any size)
    input_encoding: Mapped[str] = mapped_column(String(16), default="tensor", server_default="tensor")
    # [{"name", "key", "sha256", "size", "rows"}] in upload order; a sample's `shard` is an index into it.
    shards: Mapped[list[Any]] = mapped_column(JSON)
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    # Salts the tombstones' hashes of erased sample and subject ids (made at the first erasure).
    tombstone_salt: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Sample(Base):
    """One sample of a dataset. `position` orders the split as the worker assembles it; positions stay
    stable when rows are erased from the shards (they become sparse), so erased_samples keep pointing right."""

    __tablename__ = "samples"
    __table_args__ = (
        UniqueConstraint("dataset_id", "sample_id", name="uq_samples_dataset_sample"),
        Index("ix_samples_dataset_subject", "dataset_id", "subject_id"),
        Index("ix_samples_dataset_split_position", "dataset_id", "split", "position"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    sample_id: Mapped[str] = mapped_column(String(200))
    subject_id: Mapped[str | None] = mapped_column(String(200))
    split: Mapped[str] = mapped_column(String(5))  # train | test
    position: Mapped[int] = mapped_column(Integer)
    shard: Mapped[int] = mapped_column(Integer)
    row: Mapped[int] = mapped_column(Integer)
    label: Mapped[int] = mapped_column(Integer)


class Model(Base):
    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    architecture: Mapped[str] = mapped_column(String(100))
    architecture_kwargs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    num_classes: Mapped[int] = mapped_column(Integer)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    # {"preset", "mean", "std"}: the only input transformation the worker applies (domain/preprocessing.py)
    preprocessing: Mapped[dict[str, Any]] = mapped_column(JSON)
    input_adapter: Mapped[str | None] = mapped_column(Text)  # how stored images become model input, in words
    input_transform: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # resize / crop (unlearning/transforms.py)
    augmentation: Mapped[list[Any] | None] = mapped_column(JSON, default=list)  # training steps only; None: none
    current_version: Mapped[int] = mapped_column(Integer, default=1)
    # validating → ready | invalid: a worker loads the weights into the architecture (domain/catalog.py)
    state: Mapped[str] = mapped_column(String(20))
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    warnings: Mapped[list[Any]] = mapped_column(JSON, default=list)
    validation_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # bounded re-sends
    # Its deletion requests wait in awaiting_approval for another key's decision (domain/approval.py).
    require_approval: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version", name="uq_model_versions_model_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(300))
    size: Mapped[int] = mapped_column(BigInteger)
    parent_version: Mapped[int | None] = mapped_column(Integer)
    deletion_request_id: Mapped[str | None] = mapped_column(String(40), unique=True)
    t: Mapped[float | None] = mapped_column(Float)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    preprocessing: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the model's, when this version was made
    input_transform: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # likewise
    augmentation: Mapped[list[Any] | None] = mapped_column(JSON)  # likewise
    # Set when the retention policy deleted the weights (worker/erasure.py): metadata and sha256 stay, GET
    # .../weights answers 410. `weights_deleted_by` is the request whose clean-up deleted them.
    weights_deleted_at: Mapped[datetime | None] = mapped_column()
    weights_deleted_by: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DeletionRequest(Base):
    __tablename__ = "deletion_requests"
    __table_args__ = (
        Index("ix_deletion_requests_model_created", "model_id", "created_at"),
        Index("ix_deletion_requests_state_created", "state", "created_at"),
        Index("ix_deletion_requests_due_at", "due_at"),
        Index("ix_deletion_requests_job_id", "job_id"),
        Index("ix_deletion_requests_created", "created_at", "id"),  # the unfiltered list, newest first
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"))
    model_version: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(20))  # domain/lifecycle.py
    external_id: Mapped[str | None] = mapped_column(String(200))
    base_method: Mapped[str] = mapped_column(String(40))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)  # every default filled in
    selection_mode: Mapped[str] = mapped_column(String(10), default="manual")
    callback_url: Mapped[str | None] = mapped_column(Text)
    forget: Mapped[dict[str, Any]] = mapped_column(JSON)  # the selector as submitted
    forget_positions: Mapped[list[Any]] = mapped_column(JSON)  # train positions, sorted
    forget_count: Mapped[int] = mapped_column(Integer)
    forget_fingerprint: Mapped[str] = mapped_column(String(64))
    # For the proof-of-erasure report: sha256(salt + "\n" + sorted sample ids, one per line). The salt keeps a
    # report from confirming a guessed id list of other requests; NULL for requests made before it existed.
    forget_salt: Mapped[str | None] = mapped_column(String(32))
    forget_salted_fingerprint: Mapped[str | None] = mapped_column(String(64))
    progress: Mapped[dict[str, Any]] = mapped_column(JSON)
    # recommended_t, effective_region, targets, timings, ... (the points are rows of curve_points)
    curve_summary: Mapped[dict[str, Any] | None] = mapped_column("curve", JSON)
    selected_t: Mapped[float | None] = mapped_column(Float)
    selected_version: Mapped[int | None] = mapped_column(Integer)
    selected_by: Mapped[str | None] = mapped_column(String(200))
    selected_at: Mapped[datetime | None] = mapped_column()
    # The operator's words when the chosen point fails the erasure criterion (domain/erasure.py).
    selection_acknowledgement: Mapped[str | None] = mapped_column(Text)
    erasure_criterion: Mapped[dict[str, Any]] = mapped_column(JSON)  # tolerances, every default filled in
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Coalescing (domain/coalesce.py): a member's leader, whose job runs this request with others; NULL when
    # the request runs its own job. The leader's job restarts without a member cancelled while it runs.
    job_id: Mapped[str | None] = mapped_column(String(40))
    restart_requested: Mapped[bool | None] = mapped_column(Boolean, default=False)
    created_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When the data subject's request reached the controller (may precede created_at), and the answer's deadline.
    received_at: Mapped[datetime] = mapped_column()
    due_at: Mapped[datetime] = mapped_column()
    due_extension: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # {"days", "reason", "by", "at"}: once
    # The approval gate's decision (domain/approval.py): {"decision": "approved" | "denied", "by", "at", "reason"}.
    approval: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    overdue_notified_at: Mapped[datetime | None] = mapped_column()  # the "overdue" event and callback, sent once
    dispatched_at: Mapped[datetime | None] = mapped_column()  # last time its task went to the broker
    started_at: Mapped[datetime | None] = mapped_column()
    heartbeat_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    # Set by the clean-up; a finished request without it is cleaned up by the reconciler.
    artifacts_deleted_at: Mapped[datetime | None] = mapped_column()
    # A succeeded request's erasure beyond the weights (superseded versions, training shards) is done;
    # until then the reconciler runs it again (worker/erasure.py).
    data_erased_at: Mapped[datetime | None] = mapped_column()
    # Loaded with the request (a page's in one query): the API serialises it after its session has closed.
    points: Mapped[list[CurvePoint]] = relationship(order_by="CurvePoint.t", viewonly=True, lazy="selectin")
    # The audit chain's anchor (models/audit.py): how many events, the newest's hash, and the service's
    # signature over both; NULL on requests made before migration 0008 until a key rotation seals them.
    chain_length: Mapped[int | None] = mapped_column(Integer)
    chain_head: Mapped[str | None] = mapped_column(String(64))
    chain_seal: Mapped[str | None] = mapped_column(String(100))

    # What the API shows, read by the response schemas (`from_attributes`).
    @property
    def curve(self) -> dict[str, Any] | None:
        if self.curve_summary is None:
            return None
        return {"points": self.points, "recommended_point": self.curve_summary.get("recommended_point")} | {
            k: self.curve_summary[k] for k in ("recommended_t", "effective_region", "targets")
        }

    @property
    def selection(self) -> dict[str, Any] | None:
        if self.selected_t is None:
            return None
        return {
            "t": self.selected_t,
            "model_version": self.selected_version,
            "selected_by": self.selected_by,
            "selected_at": self.selected_at,
            "acknowledgement": self.selection_acknowledgement,
        }


class CurvePoint(Base):
    __tablename__ = "curve_points"

    request_id: Mapped[str] = mapped_column(ForeignKey("deletion_requests.id", ondelete="CASCADE"), primary_key=True)
    t: Mapped[float] = mapped_column(Float, primary_key=True)
    forget_accuracy: Mapped[float] = mapped_column(Float)
    unlearning_accuracy: Mapped[float] = mapped_column(Float)
    retain_accuracy: Mapped[float] = mapped_column(Float)
    test_accuracy: Mapped[float] = mapped_column(Float)
    mia_efficacy: Mapped[float] = mapped_column(Float)
    forgotten_class_test_accuracy: Mapped[float | None] = mapped_column(Float)
    std_errors: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # {metric: binomial standard error}
    rows: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # {split: rows measured}


class GridPoint(Base):
    """A grid point of a running job's pass, or a part of a point measured on every row (`parts` > 0), shared with
    other workers (worker/grid.py): queued → running → succeeded (metrics, or a part's counts) | failed
    (non-finite: rejected). Deleted once the pass is merged. Aggregates only."""

    __tablename__ = "grid_points"

    request_id: Mapped[str] = mapped_column(ForeignKey("deletion_requests.id", ondelete="CASCADE"), primary_key=True)
    t: Mapped[float] = mapped_column(Float, primary_key=True)
    part: Mapped[int] = mapped_column(Integer, primary_key=True, default=0)
    parts: Mapped[int] = mapped_column(Integer, default=0)  # 0: a grid point on the sampled rows
    curve_sha256: Mapped[str] = mapped_column(String(64))  # the stored θ_c the point is measured on
    state: Mapped[str] = mapped_column(String(20))
    claimed_at: Mapped[datetime | None] = mapped_column()
    measured_by: Mapped[str | None] = mapped_column(String(200))  # the worker's name
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class PointAttack(Base):
    """The auditor's attacks on a curve point an operator asked about before choosing one (domain/point_attacks.py,
    worker/point_attacks.py): the point's full-set metrics, the attacks' evidence and the erasure criterion's
    verdict. Aggregates only, never rows. `heartbeat_at` moves while a worker runs it; a silent one is re-sent."""

    __tablename__ = "point_attacks"

    request_id: Mapped[str] = mapped_column(ForeignKey("deletion_requests.id", ondelete="CASCADE"), primary_key=True)
    t: Mapped[float] = mapped_column(Float, primary_key=True)
    state: Mapped[str] = mapped_column(String(20))  # queued | running | done | failed
    requested_by: Mapped[str] = mapped_column(String(200))
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    dispatched_at: Mapped[datetime | None] = mapped_column()
    heartbeat_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    evidence: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    criterion: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # {"met", "reasons"}
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # a problem (worker/errors.py)


class ErasedSample(Base):
    """A training row erased from a model by a succeeded request: later jobs and requests leave it out.

    One indexed lookup by (model, position) however long the model's history grows.
    """

    __tablename__ = "erased_samples"

    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)  # the row's train position in the dataset
    request_id: Mapped[str] = mapped_column(ForeignKey("deletion_requests.id", ondelete="CASCADE"))
    erased_at: Mapped[datetime] = mapped_column(default=utcnow)


class SampleTombstone(Base):
    """All that is kept of a sample erased from the stored dataset: its salted id hash (and its subject's),
    so that naming it again answers "already erased", not "unknown"."""

    __tablename__ = "sample_tombstones"
    __table_args__ = (
        Index("ix_sample_tombstones_dataset_sample", "dataset_id", "sample_hash"),
        Index("ix_sample_tombstones_dataset_subject", "dataset_id", "subject_hash"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    sample_hash: Mapped[str] = mapped_column(String(64))  # sha256(salt + "\n" + sample id)
    subject_hash: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str] = mapped_column(String(40))  # the request whose clean-up rewrote the shards
    erased_at: Mapped[datetime] = mapped_column(default=utcnow)


class Event(Base):
    """The audit trail: every state change and progress milestone, with who and when. Each request's events
    form a hash chain (models/audit.py): `hash` covers the event and `prev_hash`, the previous event's hash."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_request_at", "request_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # Nullable in the schema (migration 0001) but always written (record_event), hence typed `str`.
    request_id: Mapped[str] = mapped_column(ForeignKey("deletion_requests.id", ondelete="CASCADE"), nullable=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    type: Mapped[str] = mapped_column(String(40))
    state: Mapped[str | None] = mapped_column(String(20))
    actor: Mapped[str | None] = mapped_column(String(200))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class Callback(Base):
    """A callback owed to a request's caller (the outbox): written in the transaction of the change it
    announces, so a broker outage cannot lose it. The deliver_callback task delivers it and the reconciler
    re-sends one that nobody attempted for a while; `message_id` is its webhook-id on every attempt."""

    __tablename__ = "callbacks"
    __table_args__ = (Index("ix_callbacks_pending", "delivered_at", "abandoned_at", "attempted_at"),)

    message_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("deletion_requests.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(40))  # the state announced, or "overdue"
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    attempted_at: Mapped[datetime] = mapped_column(default=utcnow)  # last sent to the broker or attempted
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    delivered_at: Mapped[datetime | None] = mapped_column()
    abandoned_at: Mapped[datetime | None] = mapped_column()  # refused destination, or every attempt failed


class SigningKey(Base):
    """Ed25519 keys that sign proof-of-erasure reports. The current one has `slot` 1 (unique: one at a
    time, even when two API processes start together); retired ones keep their public key for verification."""

    __tablename__ = "signing_keys"

    key_id: Mapped[str] = mapped_column(String(16), primary_key=True)  # first 16 hex of sha256(public key)
    public_key: Mapped[str] = mapped_column(String(64))  # raw 32 bytes, base64
    # PKCS#8 PEM, encrypted with MCU_SIGNING_KEY_PASSPHRASE when set; NULL when the key lives in a file.
    private_key: Mapped[str | None] = mapped_column(Text)
    slot: Mapped[int | None] = mapped_column(Integer, unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column()


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of the secret, never the secret
    scopes: Mapped[list[Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column()
    expires_at: Mapped[datetime | None] = mapped_column()


class IdempotencyRecord(Base):
    """The first response to a POST with an Idempotency-Key, per caller and route."""

    __tablename__ = "idempotency_records"
    __table_args__ = (UniqueConstraint("principal", "route", "key", name="uq_idempotency_principal_route_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    principal: Mapped[str] = mapped_column(String(200))
    route: Mapped[str] = mapped_column(String(100))
    key: Mapped[str] = mapped_column(String(200))
    body_sha256: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(40))
    status_code: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
