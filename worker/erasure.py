"""Erasure beyond the weights, once a request succeeded: what else still holds the erased rows.

- Superseded versions. Every version older than the model's current one was trained on rows a later
  version erased: the newest `MCU_KEEP_SUPERSEDED_VERSIONS` of them keep their weights for rollback, the
  others lose them (metadata and sha256 stay; GET .../weights answers 410).
- Training shards. A dataset may back several models, and a model can only unlearn rows whose images are
  still stored. So a row leaves the shards once *every* model on the dataset (but invalid ones, which never
  take requests) has erased it; until then the report names the models that still hold it. Each shard
  holding such rows is rewritten without them (worker/shards.py, either shard format: a new,
  content-addressed object), the sample rows point at
  the new rows, the erased samples' rows are replaced by tombstones (salted id hashes), and the old objects
  are deleted. Positions stay as they were: sparse afterwards, so `erased_samples` keep pointing right.

Objects are content-addressed, so two versions (or datasets) can share one: an object is deleted only when
no live row points at it. Each step records an event naming the objects to delete, before deleting them:
the clean-up runs again (reconciler) until `data_erased_at` is set, and deletes what a crash left behind.
Copies in workers' local caches go with the next reconciler round of each worker (`prune_cache`).
"""

from __future__ import annotations

import bisect
import logging
import secrets
from collections import defaultdict

import torch
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from domain.catalog import ModelState
from domain.evidence import SHARDS_REWRITTEN, TRAINING_ROWS_ERASED, WEIGHTS_DELETED
from domain.forget import id_hash
from domain.lifecycle import State
from models import (
    Dataset,
    DeletionRequest,
    ErasedSample,
    Event,
    Model,
    ModelVersion,
    Sample,
    SampleTombstone,
    in_list,
    record_event,
    utcnow,
)
from worker.artifacts import delete_artifacts
from worker.services import Services
from worker.shards import without_rows

log = logging.getLogger(__name__)


def clean_up(services: Services, request_id: str) -> None:
    """The clean-up of a finished request: its artifacts; for a succeeded one also superseded weights and
    training rows. Idempotent: the reconciler calls it again for whatever is not marked done."""
    with services.factory() as session:
        row = session.get(DeletionRequest, request_id)
        if row is None:
            return
        state, data_done = row.state, row.data_erased_at
        # A rebase deleted the artifacts of an older base too: only a deletion after finishing counts.
        artifacts_done = row.artifacts_deleted_at is not None and row.finished_at is not None \
            and row.artifacts_deleted_at >= row.finished_at
    if not artifacts_done:
        delete_artifacts(services, request_id)
    if state == State.SUCCEEDED and data_done is None:
        retire_superseded_versions(services, request_id)
        erase_training_rows(services, request_id)
        _delete_named_objects(services, request_id)
        with services.factory() as session, session.begin():
            session.execute(update(DeletionRequest).where(DeletionRequest.id == request_id)
                            .values(data_erased_at=utcnow()))


def retire_superseded_versions(services: Services, request_id: str) -> None:
    """Mark the weights of superseded versions beyond the kept ones deleted, with an event naming them."""
    keep = services.settings.keep_superseded_versions
    with services.factory() as session, session.begin():
        request = session.get(DeletionRequest, request_id)
        assert request is not None
        model = session.get(Model, request.model_id, with_for_update=True)
        assert model is not None
        superseded = session.scalars(select(ModelVersion).where(
            ModelVersion.model_id == model.id, ModelVersion.version < model.current_version)
            .order_by(ModelVersion.version.desc())).all()
        retired = [v for v in superseded[keep:] if v.weights_deleted_at is None]
        if not retired:
            return
        now = utcnow()
        for version in retired:
            version.weights_deleted_at, version.weights_deleted_by = now, request_id
        record_event(session, request_id, WEIGHTS_DELETED, request.state, "worker", {
            "versions": [v.version for v in retired], "kept": [v.version for v in superseded[:keep]],
            "objects": [v.storage_key for v in retired]})


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
    models = session.scalars(select(Model.id).where(Model.dataset_id == dataset_id,
                                                    Model.state != ModelState.INVALID)).all()
    erased_by_all = select(ErasedSample.position).where(ErasedSample.model_id.in_(models)) \
        .group_by(ErasedSample.position).having(func.count() == len(models))
    return list(session.scalars(select(Sample).where(
        Sample.dataset_id == dataset_id, Sample.split == "train",
        in_list(session, Sample.position, positions, "positions"), Sample.position.in_(erased_by_all))))


def _rewrite_shards(services: Services, session: Session, dataset: Dataset, gone: list[Sample],
                    request_id: str) -> None:
    salt = dataset.tombstone_salt or secrets.token_hex(16)
    by_shard: dict[int, set[int]] = defaultdict(set)
    for sample in gone:
        by_shard[sample.shard].add(sample.row)
    gone_ids = {s.id for s in gone}
    staying: dict[int, list[Sample]] = defaultdict(list)  # per shard, the samples that keep their rows
    for sample in session.scalars(select(Sample).where(Sample.dataset_id == dataset.id,
                                                       Sample.shard.in_(list(by_shard)))):
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
        shards[index] = old | {"key": stored.key, "sha256": stored.sha256, "size": stored.size,
                               "rows": int(kept.sum())}
        rewritten.append({"name": old["name"], "old_sha256": old["sha256"], "new_sha256": stored.sha256,
                          "rows_removed": len(drop), "old_key": old["key"]})
        for sample in staying[index]:  # rows after a removed one move up
            sample.row -= bisect.bisect_left(drop, sample.row)
    now = utcnow()
    session.add_all(SampleTombstone(dataset_id=dataset.id, sample_hash=id_hash(salt, s.sample_id),
                                    subject_hash=id_hash(salt, s.subject_id) if s.subject_id else None,
                                    request_id=request_id, erased_at=now) for s in gone)
    for sample in gone:
        session.delete(sample)
    dataset.shards, dataset.tombstone_salt, dataset.num_train = shards, salt, dataset.num_train - len(gone)
    shard_detail = [{k: v for k, v in r.items() if k != "old_key"} for r in rewritten]
    record_event(session, request_id, SHARDS_REWRITTEN, State.SUCCEEDED, "worker", {
        "dataset_id": dataset.id, "rows": len(gone), "shards": shard_detail,
        "objects": [r["old_key"] for r in rewritten]})
    # Every request whose rows these were gets the evidence in its own audit trail (and report).
    owners = session.execute(select(ErasedSample.request_id, func.count()).where(
        in_list(session, ErasedSample.position, [s.position for s in gone], "positions"),
        ErasedSample.model_id.in_(select(Model.id).where(Model.dataset_id == dataset.id)))
        .group_by(ErasedSample.request_id)).all()
    for owner, count in owners:
        record_event(session, owner, TRAINING_ROWS_ERASED, State.SUCCEEDED, "worker", {
            "dataset_id": dataset.id, "rows": count, "by_request": request_id, "shards": shard_detail})


def live_objects(session: Session) -> dict[str, str]:
    """Every object a live row points at: key -> sha256 (datasets' shards, versions whose weights are kept)."""
    live = dict(session.execute(select(ModelVersion.storage_key, ModelVersion.sha256)
                                .where(ModelVersion.weights_deleted_at.is_(None))).all())
    for shards in session.scalars(select(Dataset.shards)):
        live |= {s["key"]: s["sha256"] for s in shards}
    return live


def _delete_named_objects(services: Services, request_id: str) -> None:
    """Delete the objects this request's erasure events name, unless a live row still points at one."""
    with services.factory() as session:
        named = [key for detail in session.scalars(select(Event.detail).where(
            Event.request_id == request_id, Event.type.in_((WEIGHTS_DELETED, SHARDS_REWRITTEN))))
            for key in (detail or {}).get("objects", [])]
        live = live_objects(session)
    for key in dict.fromkeys(named):
        if key not in live:
            services.store.delete(key)
            services.cache.discard(key.rsplit("/", 1)[-1])  # keys end in the content's sha256


def prune_cache(services: Services) -> int:
    """Delete this worker's cached copies of objects no live row points at (erased shards, deleted weights)."""
    with services.factory() as session:
        live = set(live_objects(session).values())
    return services.cache.prune(live)

