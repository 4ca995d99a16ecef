"""erasure beyond the weights: superseded versions' weights, training shards, tombstones; coalesced jobs

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28 09:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # add_column only: on SQLite every batch operation that recreates a table drops the old one, and with
    # foreign keys on that cascade-deletes child rows (see 0005).
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("weights_deleted_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("weights_deleted_by", sa.String(length=40), nullable=True))
    with op.batch_alter_table("deletion_requests", schema=None) as batch_op:
        # NULL on requests that succeeded before: the reconciler applies the retention policy to them too.
        batch_op.add_column(sa.Column("data_erased_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("job_id", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("restart_requested", sa.Boolean(), nullable=True))
    op.create_index("ix_deletion_requests_job_id", "deletion_requests", ["job_id"])
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tombstone_salt", sa.String(length=32), nullable=True))
    op.create_table(
        "sample_tombstones",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dataset_id", sa.String(length=40), nullable=False),
        sa.Column("sample_hash", sa.String(length=64), nullable=False),
        sa.Column("subject_hash", sa.String(length=64), nullable=True),
        sa.Column("request_id", sa.String(length=40), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_sample_tombstones_dataset_sample", "sample_tombstones", ["dataset_id", "sample_hash"])
    op.create_index("ix_sample_tombstones_dataset_subject", "sample_tombstones", ["dataset_id", "subject_hash"])


def downgrade() -> None:
    op.drop_index("ix_sample_tombstones_dataset_subject", table_name="sample_tombstones")
    op.drop_index("ix_sample_tombstones_dataset_sample", table_name="sample_tombstones")
    op.drop_table("sample_tombstones")
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_column("tombstone_salt")
    op.drop_index("ix_deletion_requests_job_id", table_name="deletion_requests")
    with op.batch_alter_table("deletion_requests", schema=None) as batch_op:
        batch_op.drop_column("restart_requested")
        batch_op.drop_column("job_id")
        batch_op.drop_column("data_erased_at")
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_column("weights_deleted_by")
        batch_op.drop_column("weights_deleted_at")
