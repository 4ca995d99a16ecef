"""model state (validating → ready | invalid, set by a worker), declared preprocessing, architecture kwargs

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 07:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models", schema=None) as batch_op:
        # Models registered before this revision were checked by the API itself: they are ready.
        batch_op.add_column(sa.Column("state", sa.String(length=20), nullable=False, server_default="ready"))
        batch_op.add_column(sa.Column("error", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("warnings", sa.JSON(), nullable=False, server_default="[]"))
        batch_op.add_column(sa.Column("architecture_kwargs", sa.JSON(), nullable=False, server_default="{}"))
        # Before this revision the worker normalised with the dataset's statistics: that is what they declare.
        batch_op.add_column(
            sa.Column(
                "preprocessing",
                sa.JSON(),
                nullable=False,
                server_default='{"preset": "dataset", "mean": null, "std": null}',
            )
        )
        batch_op.add_column(sa.Column("input_adapter", sa.Text(), nullable=True))
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("preprocessing", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_column("preprocessing")
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_column("input_adapter")
        batch_op.drop_column("preprocessing")
        batch_op.drop_column("architecture_kwargs")
        batch_op.drop_column("warnings")
        batch_op.drop_column("error")
        batch_op.drop_column("state")
