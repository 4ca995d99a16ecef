"""deletion requests: an index on (created_at, id), so the unfiltered list (newest first) reads a page instead
of sorting the whole table

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 06:20:00
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deletion_requests", schema=None) as batch_op:
        batch_op.create_index("ix_deletion_requests_created", ["created_at", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("deletion_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_deletion_requests_created")
