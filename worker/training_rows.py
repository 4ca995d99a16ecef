"""Erasure from the training shards, once a request succeeded (the clean-up, worker/erasure.py).

A dataset may back several models, and a model can only unlearn rows whose images are still stored. So a row
leaves the shards once *every* model on the dataset (but invalid ones, which never take requests) has erased
it; until then the report names the models that still hold it. Each shard holding such rows is rewritten
without them (worker/shards.py, either shard format: a new, content-addressed object), the sample rows point
at the new rows, the erased samples' rows are replaced by tombstones (salted id hashes), and the old objects
are deleted (by worker/erasure.py, from the event naming them). Positions stay as they were: sparse
afterwards, so `erased_samples` keep pointing right.
"""

from __future__ import annotations

import bisect
import secrets
from collections import defaultdict

import torch
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from domain.catalog import ModelState
from domain.evidence import SHARDS_REWRITTEN, TRAINING_ROWS_ERASED
from domain.forget import id_hash
from domain.lifecycle import State
from models import Dataset, DeletionRequest, ErasedSample, Model, Sample, SampleTombstone, in_list, record_event, utcnow
from models.objects import claim
from worker.services import Services
from worker.shards import without_rows


def erase_training_rows(services: Services, request_id: str) -> None:
    """Rewrite the shards without the request's rows that every model on the dataset has now erased."""
    with services.factory() as session, session.begin():
        request = session.get(DeletionRequest, request_id)
        assert request is not None
        model = session.get(Model, request.model_id)
        assert model is not None
        # Locked for the whole rewrite: two clean-ups rewriting one shard would each bring back the other's rows.
        dataset = session.get(Dataset, model.dataset_id, with_for_update=True)
        assert dataset is not None
        gone = _erased_everywhere(session, dataset.id, request.forget_positions)
        if not gone:
            return
        _rewrite_shards(services, session, dataset, gone, request_id)


def _erased_everywhere(session: Session, dataset_id: str, positions: list[int]) -> list[Sample]:
    """Stored train samples at `positions` that every model on the dataset has erased."""
    models = session.scalars(
        select(Model.id).where(Model.dataset_id == dataset_id, Model.state != ModelState.INVALID)
    ).all()
    erased_by_all = (
        select(ErasedSample.position)
        .where(ErasedSample.model_id.in_(models))
        .group_by(ErasedSample.position)
        .having(func.count() == len(models))
    )
    return list(
        session.scalars(
            select(Sample).where(
                Sample.dataset_id == dataset_id,
                Sample.split == "train",
                in_list(session, Sample.position, positions, "positions"),
                Sample.position.in_(erased_by_all),
            )
        )
    )


def _rewrite_shards(
    services: Services, session: Session, dataset: Dataset, gone: list[Sample], request_id: str
) -> None:
    salt = dataset.tombstone_salt or secrets.token_hex(16)
    by_shard: dict[int, set[int]] = defaultdict(set)
    for sample in gone:
        by_shard[sample.shard].add(sample.row)
    gone_ids = {s.id for s in gone}
    staying: dict[int, list[Sample]] = defaultdict(list)  # per shard, the samples that keep their rows
    for sample in session.scalars(
        select(Sample).where(Sample.dataset_id == dataset.id, Sample.shard.in_(list(by_shard)))
    ):
        if sample.id not in gone_ids:
            staying[sample.shard].append(sample)
    shards = [dict(s) for s in dataset.shards]
    rewritten = []
    for index, rows in sorted(by_shard.items()):
        # A row another (staying) sample still points at is that sample's too: it stays.
        drop = sorted(rows - {s.row for s in staying[index]})
        old = shards[index]
        kept = torch.ones(old["rows"], dtype=torch.bool)
        kept[drop] = False
        with without_rows(services.cache.path(old["key"], old["sha256"]), kept) as rewritten_file:
            stored = services.store.put_stream("shards", rewritten_file)
            claim(session, services.store, stored.key, rewritten_file)
        shards[index] = old | {"key": stored.key, "sha256": stored.sha256, "size": stored.size, "rows": int(kept.sum())}
        rewritten.append(
            {
                "name": old["name"],
                "old_sha256": old["sha256"],
                "new_sha256": stored.sha256,
                "rows_removed": len(drop),
                "old_key": old["key"],
            }
        )
        for sample in staying[index]:  # rows after a removed one move up
            sample.row -= bisect.bisect_left(drop, sample.row)
    now = utcnow()
    session.add_all(
        SampleTombstone(
            dataset_id=dataset.id,
            sample_hash=id_hash(salt, s.sample_id),
            subject_hash=id_hash(salt, s.subject_id) if s.subject_id else None,
            request_id=request_id,
            erased_at=now,
        )
        for s in gone
    )
    for sample in gone:
        session.delete(sample)
    dataset.shards, dataset.tombstone_salt, dataset.num_train = shards, salt, dataset.num_train - len(gone)
    shard_detail = [{k: v for k, v in r.items() if k != "old_key"} for r in rewritten]
    record_event(
        session,
        request_id,
        SHARDS_REWRITTEN,
        State.SUCCEEDED,
        "worker",
        {
            "dataset_id": dataset.id,
            "rows": len(gone),
            "shards": shard_detail,
            "objects": [r["old_key"] for r in rewritten],
        },
    )
    # Every request whose rows these were gets the evidence in its own audit trail (and report).
    owners = session.execute(
        select(ErasedSample.request_id, func.count())
        .where(
            in_list(session, ErasedSample.position, [s.position for s in gone], "positions"),
            ErasedSample.model_id.in_(select(Model.id).where(Model.dataset_id == dataset.id)),
        )
        .group_by(ErasedSample.request_id)
    ).all()
    for owner, count in owners:
        record_event(
            session,
            owner,
            TRAINING_ROWS_ERASED,
            State.SUCCEEDED,
            "worker",
            {"dataset_id": dataset.id, "rows": count, "by_request": request_id, "shards": shard_detail},
        )
