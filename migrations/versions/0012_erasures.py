"""subject-wide erasures: one resource per "erase these subjects everywhere", and the deletion requests it filed

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 16:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "erasures",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("external_id", sa.String(length=200), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("forget_kind", sa.String(length=12), nullable=False),
        sa.Column("forget_count", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.JSON(), nullable=False),
        sa.Column("body_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("created_by", "external_id", name="uq_erasures_creator_external"),
    )
    op.create_index("ix_erasures_created", "erasures", ["created_at", "id"])
    op.create_table(
        "erasure_requests",
        sa.Column("erasure_id", sa.String(length=40), nullable=False),
        sa.Column("request_id", sa.String(length=40), nullable=False),
        sa.Column("model_id", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(["erasure_id"], ["erasures.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["request_id"], ["deletion_requests.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("erasure_id", "request_id"),
    )
    op.create_index("ix_erasure_requests_request", "erasure_requests", ["request_id"])


def downgrade() -> None:
    op.drop_index("ix_erasure_requests_request", table_name="erasure_requests")
    op.drop_table("erasure_requests")
    op.drop_index("ix_erasures_created", table_name="erasures")
    op.drop_table("erasures")
