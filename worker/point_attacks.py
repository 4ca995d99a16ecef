"""The attacks an operator asked for on a curve point (domain/point_attacks.py): queued → running → succeeded | failed.

The worker claims the row (a duplicate delivery, or a second worker, finds it taken), measures φ(t) and runs the
attacks exactly as a publication would (worker/jobs.py `measure_at`), and stores the aggregates. While it runs,
its heartbeat moves; the reconciler re-sends a row whose worker went silent or whose task was lost
(`resend_point_attacks`). The request leaving awaiting_selection (chosen, cancelled) stops it: its curve's
artifacts are deleted once it ends.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, or_, select, update

from domain.lifecycle import State
from domain.point_attacks import FAILED, QUEUED, RUNNING, SUCCEEDED
from domain.problems import problem_type
from domain.tasks import ATTACK_POINT
from models import DeletionRequest, PointAttack, record_event, utcnow
from unlearning.training import Cancelled, JobHooks
from worker.errors import problem_for
from worker.jobs import measure_at
from worker.services import Services

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0  # how often a running attack records that it is alive (and looks at its request)


def attack_point(services: Services, request_id: str, t: float) -> None:
    if not _claim(services, request_id, t):
        return
    with services.factory() as session:
        request = session.get(DeletionRequest, request_id)
        assert request is not None
        session.expunge(request)
    if request.state != State.AWAITING_SELECTION:
        _finish(services, request_id, t, error=_left_selection(request.state))
        return
    try:
        _, measured, judgement = measure_at(services, request, t, _hooks(services, request_id, t))
    except Cancelled:
        with services.factory() as session:
            state = session.scalar(select(DeletionRequest.state).where(DeletionRequest.id == request_id))
        _finish(services, request_id, t, error=_left_selection(state))
        return
    except Exception as error:
        log.warning("attacks on %s at t=%s failed", request_id, t, exc_info=error)
        _finish(services, request_id, t, error=problem_for(error))
        return
    evidence = measured.pop("evidence")
    _finish(
        services,
        request_id,
        t,
        metrics=measured,
        evidence=evidence,
        criterion={"met": judgement.met, "reasons": judgement.reasons},
    )


def resend_point_attacks(services: Services, sent_before: object, silent_since: object) -> list[str]:
    """Queued attacks whose task went out before `sent_before` (it may be lost), and running ones whose worker
    fell silent before `silent_since`: sent again (the claim lets one worker through)."""
    with services.factory() as session:
        rows = session.execute(
            select(PointAttack.request_id, PointAttack.t).where(
                or_(
                    (PointAttack.state == QUEUED) & (PointAttack.dispatched_at < sent_before),
                    (PointAttack.state == RUNNING) & (PointAttack.heartbeat_at < silent_since),
                )
            )
        ).all()
    sent = [(request_id, t) for request_id, t in rows if services.dispatcher.send(ATTACK_POINT, request_id, t)]
    if sent:
        with services.factory() as session, session.begin():
            for request_id, t in sent:
                session.execute(
                    update(PointAttack)
                    .where(PointAttack.request_id == request_id, PointAttack.t == t, PointAttack.state == QUEUED)
                    .values(dispatched_at=utcnow())
                )
    return [f"{request_id}@{t}" for request_id, t in sent]


def _claim(services: Services, request_id: str, t: float) -> bool:
    """queued → running, or running with a silent worker → running here; False when another holds it or it ended."""
    silent = utcnow() - timedelta(seconds=services.settings.heartbeat_timeout_seconds)
    with services.factory() as session, session.begin():
        claimed = session.execute(
            update(PointAttack)
            .where(
                PointAttack.request_id == request_id,
                PointAttack.t == t,
                or_(PointAttack.state == QUEUED, (PointAttack.state == RUNNING) & (PointAttack.heartbeat_at < silent)),
            )
            .values(state=RUNNING, heartbeat_at=utcnow())
        )
        return cast(CursorResult[Any], claimed).rowcount == 1  # an UPDATE's result (typed as a plain Result)


def _hooks(services: Services, request_id: str, t: float) -> JobHooks:
    """A heartbeat every HEARTBEAT_SECONDS at the attacks' cancellation points, which stop them once the request
    left awaiting_selection."""
    last = time.monotonic()

    def stop() -> bool:
        nonlocal last
        if time.monotonic() - last < HEARTBEAT_SECONDS:
            return False
        last = time.monotonic()
        with services.factory() as session, session.begin():
            session.execute(
                update(PointAttack)
                .where(PointAttack.request_id == request_id, PointAttack.t == t)
                .values(heartbeat_at=utcnow())
            )
            state = session.scalar(select(DeletionRequest.state).where(DeletionRequest.id == request_id))
        return state != State.AWAITING_SELECTION

    return JobHooks(should_cancel=stop)


def _left_selection(state: str | None) -> dict[str, str]:
    return {
        "type": problem_type("request-not-awaiting-selection"),
        "title": "The request no longer awaits selection",
        "detail": f"the request left awaiting_selection (state: {state}); its curve is chosen or gone",
    }


def _finish(
    services: Services, request_id: str, t: float, *, error: dict[str, str] | None = None, **results: Any
) -> None:
    with services.factory() as session, session.begin():
        done = session.execute(
            update(PointAttack)
            .where(PointAttack.request_id == request_id, PointAttack.t == t, PointAttack.state == RUNNING)
            .values(
                state=FAILED if error else SUCCEEDED, error=error, finished_at=utcnow(), heartbeat_at=None, **results
            )
        )
        if cast(CursorResult[Any], done).rowcount == 1:
            state = session.scalar(select(DeletionRequest.state).where(DeletionRequest.id == request_id))
            detail = {"t": t} | ({"error": error["title"]} if error else {"met": results["criterion"]["met"]})
            record_event(
                session, request_id, "point_attacks_failed" if error else "point_attacks_done", state, "worker", detail
            )
