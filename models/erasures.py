"""Subject-wide erasures (domain/subject_erasure.py): one caller's "erase these people everywhere", filed as
one deletion request per model whose training data holds them. The erasure keeps no subject or sample id:
only how many were named; each request keeps its own forget set."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.tables import Base, utcnow


class Erasure(Base):
    __tablename__ = "erasures"
    __table_args__ = (
        # Bulk intake is idempotent per item: a caller's external_id names one erasure (NULLs never collide).
        UniqueConstraint("created_by", "external_id", name="uq_erasures_creator_external"),
        Index("ix_erasures_created", "created_at", "id"),  # the list, newest first
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    external_id: Mapped[str | None] = mapped_column(String(200))
    created_by: Mapped[str] = mapped_column(String(200))
    forget_kind: Mapped[str] = mapped_column(String(12))  # subject_ids | sample_ids
    forget_count: Mapped[int] = mapped_column(Integer)  # ids named
    # Models holding the rows that got no request: [{"model_id", "reason", "detail", "already_erased_by"}]
    skipped: Mapped[list[Any]] = mapped_column(default=list)
    body_sha256: Mapped[str] = mapped_column(
        String(64)
    )  # the item as sent: its external_id again with another body is refused
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ErasureRequest(Base):
    """A deletion request an erasure filed (one per model)."""

    __tablename__ = "erasure_requests"
    __table_args__ = (Index("ix_erasure_requests_request", "request_id"),)

    erasure_id: Mapped[str] = mapped_column(ForeignKey("erasures.id", ondelete="CASCADE"), primary_key=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("deletion_requests.id", ondelete="CASCADE"), primary_key=True)
    model_id: Mapped[str] = mapped_column(String(40))


class FidesResume(Base):
    """A Fides privacy request this service paused (its policy webhook answered `{"halt": true}`) and owes a
    resume once the erasure it filed succeeds: the outbox the reconciler delivers from (worker/fides.py). The
    reply-to token is a credential (Fides binds it to the webhook, not to this privacy request: it resumes any
    request paused there until it expires): kept until used, never logged or shown."""

    __tablename__ = "fides_resumes"
    __table_args__ = (Index("ix_fides_resumes_pending", "resumed_at", "abandoned_at"),)

    privacy_request_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    erasure_id: Mapped[str | None] = mapped_column(ForeignKey("erasures.id", ondelete="CASCADE"))
    reply_to: Mapped[str] = mapped_column(String(500))  # a path under MCU_FIDES_URL
    token: Mapped[str | None] = mapped_column(Text)  # NULL once used or abandoned
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    attempted_at: Mapped[datetime | None] = mapped_column()
    resumed_at: Mapped[datetime | None] = mapped_column()
    abandoned_at: Mapped[datetime | None] = mapped_column()
    # Why it was not resumed (yet): the last answer of Fides, or the erasure's state.
    outcome: Mapped[str | None] = mapped_column(Text)
