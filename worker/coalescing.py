"""A coalesced job's members (domain/coalesce.py), as its worker meets them: a new job waits for others to
join, and starts over without a member that was cancelled while it trained."""

from __future__ import annotations

from datetime import timedelta

from domain.coalesce import members
from domain.lifecycle import State
from domain.tasks import RUN_REQUEST
from models import DeletionRequest, record_event, utcnow
from worker import artifacts
from worker.services import Services


def waits_for_members(services: Services, request_id: str) -> bool:
    """With coalescing, a new job starts MCU_COALESCE_SECONDS after its first request: others may join."""
    window = services.settings.coalesce_seconds
    if not window:
        return False
    with services.factory() as session:
        row = session.get(DeletionRequest, request_id)
        if row is None or row.state != State.QUEUED or row.job_id is not None:
            return False
        wait = (row.created_at + timedelta(seconds=window) - utcnow()).total_seconds()
    if wait <= 0:
        return False
    return services.dispatcher.send(RUN_REQUEST, request_id, countdown=wait)


def restart_without_cancelled(services: Services, request_id: str) -> bool:
    """A member of this running job was cancelled: start over without its rows (artifacts trained on them
    are deleted). False when the job itself was cancelled."""
    with services.factory() as session, session.begin():
        row = session.get(DeletionRequest, request_id, with_for_update=True)
        if row is None or row.state != State.RUNNING or not row.restart_requested:
            return False
        row.restart_requested = False
        record_event(
            session,
            request_id,
            "job_restarted",
            State.RUNNING,
            "worker",
            {"reason": "a member of the job was cancelled", "members": [m.id for m in members(session, request_id)]},
        )
    artifacts.delete_artifacts(services, request_id)
    return True
