"""when a request's forget-derived artifacts were deleted; API key expiry

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 06:35:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL for every finished request, older ones included: the reconciler makes sure once more that
    # nothing of theirs is left (deleting an absent prefix is harmless).
    with op.batch_alter_table("deletion_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("artifacts_deleted_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("expires_at")
    with op.batch_alter_table("deletion_requests", schema=None) as batch_op:
        batch_op.drop_column("artifacts_deleted_at")
