"""A running job's grid points shared with other workers (MCU_GRID_FANOUT)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03 11:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "grid_points",
        sa.Column("request_id", sa.String(length=40), nullable=False),
        sa.Column("t", sa.Float(), nullable=False),
        sa.Column("curve_sha256", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("measured_by", sa.String(length=200), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["request_id"], ["deletion_requests.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("request_id", "t"),
    )


def downgrade() -> None:
    op.drop_table("grid_points")
