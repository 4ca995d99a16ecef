"""compliance evidence: hash-chained events, deadlines, erasure criterion, signing keys

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 09:20:00
"""

from datetime import timedelta

import sqlalchemy as sa
from alembic import op

from models.audit import GENESIS, event_hash
from models.tables import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

RESPONSE_DAYS = 30  # the default of MCU_RESPONSE_DAYS when this migration was written
DEFAULT_CRITERION = {"forget_tolerance": 0.05, "mia_tolerance": 0.10}


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("hash", sa.String(length=64), nullable=True))
    with op.batch_alter_table("deletion_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("forget_salt", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("forget_salted_fingerprint", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("selection_acknowledgement", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("erasure_criterion", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("received_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("due_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("due_extension", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("overdue_notified_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "signing_keys",
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("public_key", sa.String(length=64), nullable=False),
        sa.Column("private_key", sa.Text(), nullable=True),
        sa.Column("slot", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key_id"),
        sa.UniqueConstraint("slot"),
    )
    _backfill()
    # The new columns stay nullable in the schema (the models require them): making them NOT NULL on SQLite
    # recreates the table, and dropping the old deletion_requests with foreign keys on would cascade-delete
    # every event and curve point of every request.
    op.create_index("ix_deletion_requests_due_at", "deletion_requests", ["due_at"], unique=False)


def _backfill() -> None:
    """Requests made before: received when created, due 30 days later, the default criterion. Their events
    are chained in the order they were written."""
    bind = op.get_bind()
    requests = sa.table(
        "deletion_requests",
        sa.column("id", sa.String),
        sa.column("created_at", UTCDateTime()),
        sa.column("received_at", UTCDateTime()),
        sa.column("due_at", UTCDateTime()),
        sa.column("erasure_criterion", sa.JSON),
    )
    for request_id, created_at in bind.execute(sa.select(requests.c.id, requests.c.created_at)).all():
        bind.execute(
            requests.update()
            .where(requests.c.id == request_id)
            .values(
                received_at=created_at,
                due_at=created_at + timedelta(days=RESPONSE_DAYS),
                erasure_criterion=DEFAULT_CRITERION,
            )
        )
    events = sa.table(
        "events",
        sa.column("id", sa.Integer),
        sa.column("request_id", sa.String),
        sa.column("at", UTCDateTime()),
        sa.column("type", sa.String),
        sa.column("state", sa.String),
        sa.column("actor", sa.String),
        sa.column("detail", sa.JSON),
        sa.column("prev_hash", sa.String),
        sa.column("hash", sa.String),
    )
    current, prev = None, GENESIS
    rows = bind.execute(sa.select(events).order_by(events.c.request_id, events.c.id)).all()
    for row in rows:
        if row.request_id != current:
            current, prev = row.request_id, GENESIS
        digest = event_hash(row.request_id, row.at, row.type, row.state, row.actor, row.detail, prev)
        bind.execute(events.update().where(events.c.id == row.id).values(prev_hash=prev, hash=digest))
        prev = digest


def downgrade() -> None:
    op.drop_table("signing_keys")
    op.drop_index("ix_deletion_requests_due_at", table_name="deletion_requests")
    with op.batch_alter_table("deletion_requests", schema=None) as batch_op:
        for column in (
            "overdue_notified_at",
            "due_extension",
            "due_at",
            "received_at",
            "erasure_criterion",
            "selection_acknowledgement",
            "forget_salted_fingerprint",
            "forget_salt",
        ):
            batch_op.drop_column(column)
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("hash")
        batch_op.drop_column("prev_hash")
