"""A split's (position, shard, row, label) rows, read from the driver's cursor (models/bulk.py `read_tuples`), are
the rows SQLAlchemy reads: in position order, across chunk boundaries, only the dataset's and the split's, on
SQLite and on Postgres (a server-side cursor there)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session

from migrations.runner import upgrade
from models import Dataset, make_engine, make_session_factory
from models.bulk import insert_samples, read_tuples
from models.tables import Sample
from tests.support import postgres_schema
from worker import inputs
from worker.inputs import split_rows


@pytest.fixture(params=["sqlite", "postgres"])
def session(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Session]:
    sqlite = contextlib.nullcontext(f"sqlite:///{tmp_path / 'rows.sqlite'}")
    with postgres_schema("mcu_rows") if request.param == "postgres" else sqlite as url:
        upgrade(url)
        engine = make_engine(url)
        try:
            with make_session_factory(engine)() as session:
                yield session
        finally:
            engine.dispose()


def _dataset(session: Session, dataset_id: str, rows: int) -> None:
    session.add(Dataset(id=dataset_id, name=dataset_id, num_train=rows, num_test=rows, num_classes=10,
                        input_shape=[1, 2, 2], input_dtype="uint8", input_encoding="raw", shards=[],
                        manifest_sha256="0" * 64))  # fmt: skip
    session.flush()
    # Positions inserted out of order and sparse (rows erased earlier), two shards, both splits.
    order = torch.randperm(rows, generator=torch.Generator().manual_seed(len(dataset_id))).tolist()
    insert_samples(
        session,
        [
            {
                "dataset_id": dataset_id,
                "sample_id": f"{split}{p}",
                "subject_id": None,
                "split": split,
                "position": 3 * p + 1,
                "shard": p % 2,
                "row": p // 2,
                "label": (7 * p) % 10,
            }
            for split in ("train", "test")
            for p in order
        ],
    )


def test_a_split_read_from_the_cursor_equals_the_orm_read_in_position_order(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    _dataset(session, "ds_a", 23)
    _dataset(session, "ds_b", 5)
    monkeypatch.setattr(inputs, "ROWS_PER_QUERY", 4)  # six chunks, the last one short
    dataset = session.get(Dataset, "ds_a")
    assert dataset is not None
    query = (
        select(Sample.position, Sample.shard, Sample.row, Sample.label)
        .where(Sample.dataset_id == "ds_a", Sample.split == "train")
        .order_by(Sample.position)
    )
    expected = torch.tensor([tuple(row) for row in session.execute(query)], dtype=torch.int64)
    rows = split_rows(session, dataset, "train")
    assert rows.shape == (23, 4) and torch.equal(rows, expected)
    assert rows[:, 0].tolist() == [3 * p + 1 for p in range(23)]
    assert [len(chunk) for chunk in read_tuples(session, query, 4)] == [4, 4, 4, 4, 4, 3]
    first, second = read_tuples(session, query, 4), read_tuples(session, query, 4)
    assert next(first) == next(second)  # two reads open at once: each has a cursor of its own
    first.close(), second.close()
    assert split_rows(session, dataset, "test").shape == (23, 4)
    other = session.get(Dataset, "ds_b")
    assert other is not None and split_rows(session, other, "train")[:, 0].tolist() == [3 * p + 1 for p in range(5)]
