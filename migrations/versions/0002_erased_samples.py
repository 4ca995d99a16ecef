"""erased samples: one row per (model, train position) erased by a succeeded request

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 06:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    erased = op.create_table(
        "erased_samples",
        sa.Column("model_id", sa.String(length=40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(length=40), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["request_id"], ["deletion_requests.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("model_id", "position"),
    )
    # Requests that succeeded before this table existed: the first to erase a row keeps it.
    requests = sa.table(
        "deletion_requests",
        sa.column("id"),
        sa.column("model_id"),
        sa.column("state"),
        sa.column("forget_positions", sa.JSON()),
        sa.column("finished_at"),
        sa.column("created_at"),
    )
    rows, seen = [], set()
    for request in op.get_bind().execute(
        sa.select(requests).where(requests.c.state == "succeeded").order_by(requests.c.created_at)
    ):
        for position in request.forget_positions:
            if (request.model_id, position) not in seen:
                seen.add((request.model_id, position))
                rows.append(
                    {
                        "model_id": request.model_id,
                        "position": position,
                        "request_id": request.id,
                        "erased_at": request.finished_at or request.created_at,
                    }
                )
    if rows:
        op.bulk_insert(erased, rows)


def downgrade() -> None:
    op.drop_table("erased_samples")
