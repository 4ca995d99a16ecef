"""Making a chosen point the model's next version, and starting over when another request published first."""

from __future__ import annotations

import io
import logging
from enum import Enum, auto
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

import telemetry
from domain.coalesce import job, members
from domain.forget import record_erased
from domain.lifecycle import State, transition
from models import CurvePoint, DeletionRequest, Model, ModelVersion, record_event
from models.objects import claim
from storage import ObjectInfo
from worker.artifacts import delete_artifacts
from worker.services import Services

log = logging.getLogger(__name__)


class Outcome(Enum):
    PUBLISHED = auto()
    CANCELLED = auto()  # the request was cancelled meanwhile: nothing published
    STALE = auto()  # another request published a version since this one's base


@telemetry.traced("publish")
def publish_version(
    services: Services,
    request: DeletionRequest,
    stored: ObjectInfo,
    weights: bytes,
    metrics: dict[str, Any],
) -> Outcome:
    """Next version of the model, made current, with its erased rows recorded, in one transaction; exactly
    one per request. A stale base is never published: weights derived from the older version would bring
    back what the other request erased."""
    try:
        with services.factory() as session, session.begin():
            # The request row is locked first, so a cancel cannot slip in between this check and the commit.
            row = session.get(DeletionRequest, request.id, with_for_update=True)
            if row is None or row.state != State.MATERIALIZING:
                return Outcome.CANCELLED
            model = session.get(Model, request.model_id, with_for_update=True)
            assert model is not None
            if model.current_version != request.model_version:
                return Outcome.STALE
            latest = (
                session.scalar(
                    select(ModelVersion.version)
                    .where(ModelVersion.model_id == model.id)
                    .order_by(ModelVersion.version.desc())
                    .limit(1)
                )
                or 0
            )
            version = latest + 1
            claim(session, services.store, stored.key, io.BytesIO(weights))
            session.add(
                ModelVersion(
                    model_id=model.id,
                    version=version,
                    sha256=stored.sha256,
                    storage_key=stored.key,
                    size=stored.size,
                    parent_version=request.model_version,
                    deletion_request_id=request.id,
                    t=request.selected_t,
                    metrics=metrics,
                    preprocessing=model.preprocessing,
                    input_transform=model.input_transform,
                    augmentation=model.augmentation,
                )
            )
            model.current_version = version
            # Each request of the job (one, unless coalesced) names the version and its own erased rows.
            for erasing in [row, *(m for m in members(session, row.id) if m.state == State.MATERIALIZING)]:
                erasing.selected_version = version
                record_erased(session, model.id, erasing.forget_positions, erasing.id)
                record_event(
                    session,
                    erasing.id,
                    "version_published",
                    State.MATERIALIZING,
                    "worker",
                    {"version": version, "sha256": stored.sha256, "t": request.selected_t},
                )
                session.flush()  # record_erased reads what the previous request recorded
    except IntegrityError:
        log.info("version for %s already published", request.id)  # a duplicate delivery raced us
    return Outcome.PUBLISHED


def base_is_current(services: Services, request: DeletionRequest) -> bool:
    with services.factory() as session:
        return (
            session.scalar(select(Model.current_version).where(Model.id == request.model_id)) == request.model_version
        )


def requeue_on_current_version(services: Services, request_id: str) -> None:
    """Start a stale request over on the model's current version. Its curve, selection and artifacts belong
    to the old version and are dropped; with manual selection the operator picks a point again."""
    with services.factory() as session, session.begin():
        row = session.get(DeletionRequest, request_id)
        model = session.get(Model, row.model_id) if row else None
        if row is None or model is None:
            return
        from_version = row.model_version  # read before the update below refreshes the row
        moved = transition(
            session,
            request_id,
            State.QUEUED,
            actor="worker",
            from_=[State.MATERIALIZING],
            values={
                "model_version": model.current_version,
                "curve_summary": None,
                "selected_t": None,
                "selected_by": None,
                "selected_at": None,
                "heartbeat_at": None,
                "dispatched_at": None,
                "progress": {"phase": State.QUEUED.value, "fraction": 0.0},
            },
            detail={"reason": "another request published a version first"},
        )
        if moved:
            record_event(
                session,
                request_id,
                "rebased",
                State.QUEUED,
                "worker",
                {"from_version": from_version, "to_version": model.current_version},
            )
            session.execute(delete(CurvePoint).where(CurvePoint.request_id.in_([r.id for r in job(session, row)])))
    if moved:
        delete_artifacts(services, request_id)


def rebase_onto_current_version(services: Services, request: DeletionRequest) -> None:
    """A job starts from the model's newest version (`request`, detached, is updated to it); stored
    artifacts of an older base are discarded."""
    with services.factory() as session, session.begin():
        row = session.get(DeletionRequest, request.id, with_for_update=True)
        model = session.get(Model, row.model_id) if row else None
        if row is None or model is None or row.model_version == model.current_version:
            return
        record_event(
            session,
            request.id,
            "rebased",
            row.state,
            "worker",
            {"from_version": row.model_version, "to_version": model.current_version},
        )
        row.model_version = request.model_version = model.current_version
        session.execute(
            update(DeletionRequest)
            .where(DeletionRequest.job_id == request.id)
            .values(model_version=model.current_version)
        )
    delete_artifacts(services, request.id)
