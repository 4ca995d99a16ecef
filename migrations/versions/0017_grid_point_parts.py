"""Parts of a point measured on every row, shared like grid points (MCU_GRID_FANOUT)

A `grid_points` row is a grid point (parts 0) or part `part` of `parts` of the recommended point's full-set
measurement; the key gains `part`. Rows live only while a pass is measured, so the table is made anew.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04 07:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def _grid_points(*extra: sa.Column, key: tuple[str, ...]) -> None:
    op.create_table(
        "grid_points",
        sa.Column("request_id", sa.String(length=40), nullable=False),
        sa.Column("t", sa.Float(), nullable=False),
        *extra,
        sa.Column("curve_sha256", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("measured_by", sa.String(length=200), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["request_id"], ["deletion_requests.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint(*key),
    )


def upgrade() -> None:
    op.drop_table("grid_points")
    _grid_points(
        sa.Column("part", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("parts", sa.Integer(), nullable=False, server_default="0"),
        key=("request_id", "t", "part"),
    )


def downgrade() -> None:
    op.drop_table("grid_points")
    _grid_points(key=("request_id", "t"))
