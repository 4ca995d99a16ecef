"""approval gate: a model may require approval of its deletion requests, and a request keeps the decision

- models.require_approval: its requests start in awaiting_approval (false on every model made before);
- deletion_requests.approval: {"decision": "approved" | "denied", "by", "at", "reason"}, NULL until decided.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 18:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # add_column only (see 0007: a recreated SQLite table cascade-deletes child rows). A literal default: an
    # expression (sa.false()) makes Alembic recreate the SQLite table, which fails under the requests' foreign key.
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.add_column(sa.Column("require_approval", sa.Boolean(), nullable=False, server_default="0"))
    with op.batch_alter_table("deletion_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("approval", sa.JSON(), nullable=True))


def downgrade() -> None:
    # A plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35): a batch would recreate the tables, and dropping the
    # old `models` fails under the requests' foreign key.
    op.drop_column("deletion_requests", "approval")
    op.drop_column("models", "require_approval")
