"""Fides integration: the privacy requests paused by the policy webhook, owed a resume (the outbox)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03 07:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fides_resumes",
        sa.Column("privacy_request_id", sa.String(length=200), nullable=False),
        sa.Column("erasure_id", sa.String(length=40), nullable=True),
        sa.Column("reply_to", sa.String(length=500), nullable=False),
        sa.Column("token", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resumed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("abandoned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["erasure_id"], ["erasures.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("privacy_request_id"),
    )
    op.create_index("ix_fides_resumes_pending", "fides_resumes", ["resumed_at", "abandoned_at"])


def downgrade() -> None:
    op.drop_index("ix_fides_resumes_pending", table_name="fides_resumes")
    op.drop_table("fides_resumes")
