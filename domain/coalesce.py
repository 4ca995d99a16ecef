"""Coalescing: deletion requests for one model that arrive while a job for it is still queued run as that
job, over the union of their forget sets (on when MCU_COALESCE_SECONDS > 0; a new job then waits that long
for others to join).

The first request leads: its id runs the job (claim, heartbeat, artifacts, the published version's
`deletion_request_id`). The others are members (`job_id` = the leader's id): every state change of the
leader is theirs too (domain/lifecycle.py), each with its own events and callbacks; each member's own rows
are recorded as erased under its own id, and its report names the shared curve and version.

Cancelling a member removes it from a job that has not started; once the job runs, the job restarts
without it (`restart_requested`). A cancelled leader hands a queued or running job to the oldest member.
Once the curve is trained a cancelled member is only detached: the version, trained on the union, is
published for the others, and the cancelled member's rows are not recorded as erased. Cancelling the
leader then cancels the job.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from domain.lifecycle import State
from models import DeletionRequest, record_event

LIVE_EXCLUDES = (State.CANCELLED,)  # members that left the job
LONG_AGO = datetime(1970, 1, 1, tzinfo=UTC)


def find_leader(session: Session, request: DeletionRequest) -> DeletionRequest | None:
    """A queued job of the same model with the same method, config, selection and criterion (and forget sets
    of rows, not classes: a class-wise job has its own targets), locked against a claim in the meantime."""
    if "classes" in request.forget:
        return None
    candidates = session.scalars(
        select(DeletionRequest)
        .where(
            DeletionRequest.model_id == request.model_id,
            DeletionRequest.state == State.QUEUED,
            DeletionRequest.job_id.is_(None),
            DeletionRequest.base_method == request.base_method,
            DeletionRequest.selection_mode == request.selection_mode,
        )
        .order_by(DeletionRequest.created_at)
        .with_for_update()
    ).all()
    return next(
        (
            c
            for c in candidates
            if "classes" not in c.forget
            and c.config == request.config
            and c.erasure_criterion == request.erasure_criterion
        ),
        None,
    )


def members(session: Session, leader_id: str) -> list[DeletionRequest]:
    """The job's other requests still in it, oldest first."""
    return list(
        session.scalars(
            select(DeletionRequest)
            .where(DeletionRequest.job_id == leader_id, DeletionRequest.state.not_in(LIVE_EXCLUDES))
            .order_by(DeletionRequest.created_at, DeletionRequest.id)
        )
    )


def coalesced(session: Session, leader_id: str) -> bool:
    """Whether other requests ever joined this request's job."""
    return session.scalar(select(DeletionRequest.id).where(DeletionRequest.job_id == leader_id).limit(1)) is not None


def job(session: Session, leader: DeletionRequest) -> list[DeletionRequest]:
    """The job's requests: its leader, then the members still in it."""
    return [leader, *members(session, leader.id)]


def positions_of(requests: list[DeletionRequest]) -> list[int]:
    """Their forget sets' union: a job's forget set."""
    return sorted(set().union(*(r.forget_positions for r in requests)))


def job_positions(session: Session, leader: DeletionRequest) -> list[int]:
    return positions_of(job(session, leader))


def promote(session: Session, leader_id: str, actor: str) -> str | None:
    """The oldest member leads the job from now on (the leader is leaving it); returns its id, if any."""
    remaining = members(session, leader_id)
    if not remaining:
        return None
    new_leader = remaining[0].id
    # A stale heartbeat: a worker takes the running job at once, and the reconciler resumes it if the task is lost.
    session.execute(
        update(DeletionRequest)
        .where(DeletionRequest.id == new_leader)
        .values(job_id=None, heartbeat_at=LONG_AGO if remaining[0].state == State.RUNNING else None)
    )
    session.execute(update(DeletionRequest).where(DeletionRequest.job_id == leader_id).values(job_id=new_leader))
    for request in remaining:
        record_event(
            session, request.id, "job_handed_over", request.state, actor, {"from": leader_id, "to": new_leader}
        )
    return new_leader
