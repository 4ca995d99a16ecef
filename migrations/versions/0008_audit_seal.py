"""audit seal: each request's chain length, head hash and the signing key's seal over them

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 09:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL on the requests made before: a migration holds no signing key. `mcu signing-key rotate` seals
    # those whose hash links verify (docs/evidence.md); until then `mcu audit verify` names them unsealed.
    with op.batch_alter_table("deletion_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("chain_length", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("chain_head", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("chain_seal", sa.String(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deletion_requests", schema=None) as batch_op:
        batch_op.drop_column("chain_seal")
        batch_op.drop_column("chain_head")
        batch_op.drop_column("chain_length")
