"""Erasure beyond the weights, once a request succeeded: what else still holds the erased rows.

- Superseded versions. Every version older than the model's current one was trained on rows a later
  version erased: the newest `MCU_KEEP_SUPERSEDED_VERSIONS` of them keep their weights for rollback, the
  others lose them (metadata and sha256 stay; GET .../weights answers 410).
- Training shards (worker/training_rows.py): a row leaves the stored shards once every model on the dataset
  has erased it.

Objects are content-addressed, so two versions (or datasets) can share one: an object is deleted only when
no live row points at it. Each step records an event naming the objects to delete, before deleting them:
the clean-up runs again (reconciler) until `data_erased_at` is set, and deletes what a crash left behind.
Copies in workers' local caches go with the next reconciler round of each worker (`prune_cache`).
"""

from __future__ import annotations

import logging

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from domain.evidence import SHARDS_REWRITTEN, WEIGHTS_DELETED
from domain.lifecycle import State
from models import Dataset, DeletionRequest, Event, Model, ModelVersion, record_event, utcnow
from models.objects import delete_unless
from worker.artifacts import delete_artifacts
from worker.services import Services
from worker.training_rows import erase_training_rows

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
        artifacts_done = (
            row.artifacts_deleted_at is not None
            and row.finished_at is not None
            and row.artifacts_deleted_at >= row.finished_at
        )
    if not artifacts_done:
        delete_artifacts(services, request_id)
    if state == State.SUCCEEDED and data_done is None:
        retire_superseded_versions(services, request_id)
        erase_training_rows(services, request_id)
        _delete_named_objects(services, request_id)
        with services.factory() as session, session.begin():
            session.execute(
                update(DeletionRequest).where(DeletionRequest.id == request_id).values(data_erased_at=utcnow())
            )


def retire_superseded_versions(services: Services, request_id: str) -> None:
    """Mark the weights of superseded versions beyond the kept ones deleted, with an event naming them."""
    keep = services.settings.keep_superseded_versions
    with services.factory() as session, session.begin():
        request = session.get(DeletionRequest, request_id)
        assert request is not None
        model = session.get(Model, request.model_id, with_for_update=True)
        assert model is not None
        superseded = session.scalars(
            select(ModelVersion)
            .where(ModelVersion.model_id == model.id, ModelVersion.version < model.current_version)
            .order_by(ModelVersion.version.desc())
        ).all()
        retired = [v for v in superseded[keep:] if v.weights_deleted_at is None]
        if not retired:
            return
        now = utcnow()
        for version in retired:
            version.weights_deleted_at, version.weights_deleted_by = now, request_id
        record_event(
            session,
            request_id,
            WEIGHTS_DELETED,
            request.state,
            "worker",
            {
                "versions": [v.version for v in retired],
                "kept": [v.version for v in superseded[:keep]],
                "objects": [v.storage_key for v in retired],
            },
        )


def live_objects(session: Session) -> dict[str, str]:
    """Every object a live row points at: key -> sha256 (datasets' shards, versions whose weights are kept)."""
    live = dict(
        session.execute(
            select(ModelVersion.storage_key, ModelVersion.sha256).where(ModelVersion.weights_deleted_at.is_(None))
        ).all()
    )
    for shards in session.scalars(select(Dataset.shards)):
        live |= {s["key"]: s["sha256"] for s in shards}
    return live


def _delete_named_objects(services: Services, request_id: str) -> None:
    """Delete the objects this request's erasure events name, unless a live row still points at one."""
    with services.factory() as session:
        named = [
            key
            for detail in session.scalars(
                select(Event.detail).where(
                    Event.request_id == request_id, Event.type.in_((WEIGHTS_DELETED, SHARDS_REWRITTEN))
                )
            )
            for key in (detail or {}).get("objects", [])
        ]
        live = live_objects(session)
    for key in (key for key in dict.fromkeys(named) if key not in live):
        with services.factory() as session:  # read again under the key's lock: an upload may reuse it now
            if delete_unless(session, services.store, key, lambda session, key: key in live_objects(session)):
                services.cache.discard(key.rsplit("/", 1)[-1])  # keys end in the content's sha256


def prune_cache(services: Services) -> int:
    """Delete this worker's cached copies of objects no live row points at (erased shards, deleted weights)."""
    with services.factory() as session:
        live = set(live_objects(session).values())
    return services.cache.prune(live)
