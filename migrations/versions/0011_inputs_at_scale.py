"""inputs at scale: encoded datasets, a model's input transform and augmentation, curve points' standard errors

- datasets.input_encoding: 'tensor' (rows of an `inputs` tensor) or 'encoded' (PNG / JPEG bytes per row);
- models / model_versions: input_transform (resize / center crop, NULL: none) and augmentation (a list of
  steps, NULL on rows made before: none);
- curve_points: std_errors ({metric: binomial standard error}) and rows ({split: rows measured});
- stored job configs: eval.retain_samples / eval.test_samples are now eval.retain_rows / eval.test_rows.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 08:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

RENAMED = {"retain_samples": "retain_rows", "test_samples": "test_rows"}


def upgrade() -> None:
    # add_column only (see 0007: a recreated SQLite table cascade-deletes child rows).
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("input_encoding", sa.String(length=16), nullable=False, server_default="tensor"))
    for table in ("models", "model_versions"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("input_transform", sa.JSON(), nullable=True))
            batch_op.add_column(sa.Column("augmentation", sa.JSON(), nullable=True))
    with op.batch_alter_table("curve_points", schema=None) as batch_op:
        batch_op.add_column(sa.Column("std_errors", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("rows", sa.JSON(), nullable=True))
    _rename_eval_keys(RENAMED)


def downgrade() -> None:
    _rename_eval_keys({new: old for old, new in RENAMED.items()})
    with op.batch_alter_table("curve_points", schema=None) as batch_op:
        batch_op.drop_column("rows")
        batch_op.drop_column("std_errors")
    for table in ("model_versions", "models"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("augmentation")
            batch_op.drop_column("input_transform")
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_column("input_encoding")


def _rename_eval_keys(names: dict[str, str]) -> None:
    """Stored configs are replayed (materialisation, resumed jobs): their eval keys follow the code's names."""
    bind = op.get_bind()
    requests = sa.table("deletion_requests", sa.column("id", sa.String), sa.column("config", sa.JSON))
    for request_id, config in bind.execute(sa.select(requests.c.id, requests.c.config)).all():
        evaluation = (config or {}).get("eval")
        if isinstance(evaluation, dict) and any(old in evaluation for old in names):
            renamed = {names.get(key, key): value for key, value in evaluation.items()}
            bind.execute(
                requests.update().where(requests.c.id == request_id).values(config={**config, "eval": renamed})
            )
