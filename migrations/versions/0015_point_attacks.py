"""The auditor's attacks on a curve point, run on an operator's request before a point is chosen

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "point_attacks",
        sa.Column("request_id", sa.String(length=40), nullable=False),
        sa.Column("t", sa.Float(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.Column("evidence", sa.JSON(), nullable=True),
        sa.Column("criterion", sa.JSON(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["request_id"], ["deletion_requests.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("request_id", "t"),
    )


def downgrade() -> None:
    op.drop_table("point_attacks")
