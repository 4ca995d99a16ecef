"""An operator's question before choosing a point: would φ(t) hold against the auditor's attacks?

`POST /v1/deletion-requests/{id}/attacks {"t"}` files the attacks a published version gets (relearning, the
feature probe, per-sample membership where `config.evidence` turns it on; unlearning/attacks.py) on any point of
a curve awaiting selection, and the erasure criterion's verdict on them; a GPU worker runs them
(worker/point_attacks.py) and `GET .../attacks` lists what came back. A point's attacks are filed once: asking
again returns them (a failed one is filed again). Only aggregates are stored, never rows.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from domain.lifecycle import State, enqueue_after_commit
from domain.problems import Problem
from domain.requests import get
from domain.tasks import ATTACK_POINT
from models import PointAttack, record_event, utcnow

# Their states are a request's: queued → running → succeeded | failed.
QUEUED, RUNNING, SUCCEEDED, FAILED = State.QUEUED, State.RUNNING, State.SUCCEEDED, State.FAILED
# Each point costs a GPU a few relearning runs (minutes with shadow models); enough to bracket a choice.
MAX_POINTS_PER_REQUEST = 16
T_DECIMALS = 4  # 0.3 and 0.30000001 are one point


def file_attacks(session: Session, request_id: str, t: float, actor: str) -> tuple[PointAttack, bool]:
    """The attacks on φ(t) of the request's curve, filed (and sent to a worker once this commits) unless they
    were already: returns the row and whether it is new. Commits. 409 unless the request awaits selection."""
    member = get(session, request_id)
    job_id = member.job_id or request_id  # a coalesced request's curve is its job's
    job = get(session, job_id) if member.job_id else member
    if member.state != State.AWAITING_SELECTION or job.state != State.AWAITING_SELECTION:
        raise Problem(409, f"a point can be attacked only in state awaiting_selection (state: {member.state})")
    t = round(t, T_DECIMALS)
    row = session.get(PointAttack, (job_id, t))
    if row is not None and row.state != FAILED:
        return row, False
    filed = session.scalar(select(func.count()).select_from(PointAttack).where(PointAttack.request_id == job_id)) or 0
    if row is None and filed >= MAX_POINTS_PER_REQUEST:
        raise Problem(409, f"this request's curve has {filed} attacked points already, the most it takes")
    if row is None:
        row = PointAttack(request_id=job_id, t=t, requested_by=actor)
        session.add(row)
    # Sent once this commits; one lost on the way is sent again by the reconciler after a while.
    row.state, row.requested_by, row.requested_at, row.dispatched_at = QUEUED, actor, utcnow(), utcnow()
    row.heartbeat_at = row.finished_at = row.error = None
    record_event(session, job_id, "point_attacks_requested", State.AWAITING_SELECTION, actor, {"t": t})
    enqueue_after_commit(session, ATTACK_POINT, job_id, t)
    try:
        session.commit()
    except IntegrityError:  # the same point filed at the same moment by another call: that one stands
        session.rollback()
        existing = session.get(PointAttack, (job_id, t))
        assert existing is not None
        return existing, False
    session.refresh(row)
    return row, True


def attacks_of(session: Session, request_id: str) -> dict[str, Any]:
    member = get(session, request_id)
    rows = session.scalars(
        select(PointAttack).where(PointAttack.request_id == (member.job_id or request_id)).order_by(PointAttack.t)
    ).all()
    return {"items": rows}
