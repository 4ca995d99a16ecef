"""Resuming the Fides privacy requests this service paused (domain/fides.py), from the `fides_resumes` outbox:
each reconciler round resumes those whose erasure succeeded, with the reply-to token Fides gave, until Fides
answers. Retried on a network error or a 5xx, at most MCU_CALLBACK_MAX_ATTEMPTS times; an expired token or an
erasure that failed or was cancelled ends the row as abandoned, with the reason in `outcome` and a warning in
the log (the privacy request stays paused in Fides, where an operator sees it: its reply-to token can only
resume, and resuming would let Fides call the privacy request complete)."""

from __future__ import annotations

import logging
from datetime import timedelta

import httpx
from sqlalchemy import or_, select, update

from domain import subject_erasure
from domain.subject_erasure import ErasureState
from models import FidesResume, utcnow
from worker.services import Services

log = logging.getLogger(__name__)
CLAIM_SECONDS = 60  # another worker's reconciler leaves a row alone this long after an attempt began
TIMEOUT_SECONDS = 30


def resume_owed(services: Services) -> list[str]:
    """Resume (or give up on) every owed privacy request whose erasure ended; the ids that ended here."""
    if not services.settings.fides_url:
        return []
    with services.factory() as session:
        owed = session.execute(
            select(FidesResume.privacy_request_id, FidesResume.erasure_id).where(
                FidesResume.resumed_at.is_(None), FidesResume.abandoned_at.is_(None)
            )
        ).all()
        states = {
            erasure_id: view["state"]
            for erasure_id, view in subject_erasure.by_ids(session, [e for _, e in owed if e]).items()
        }
    ended = []
    for privacy_request_id, erasure_id in owed:
        state = states.get(erasure_id) if erasure_id else None
        if state == ErasureState.SUCCEEDED:
            if _resume(services, privacy_request_id):
                ended.append(privacy_request_id)
        elif state in (ErasureState.FAILED, ErasureState.CANCELLED):
            _end(services, privacy_request_id, abandoned=True, outcome=f"not resumed: the erasure {state}")
            ended.append(privacy_request_id)
    return ended


def _resume(services: Services, privacy_request_id: str) -> bool:
    """One attempt; True when the row ended (resumed, or abandoned)."""
    settings = services.settings
    now = utcnow()
    with services.factory() as session, session.begin():
        claimed = session.execute(
            update(FidesResume)
            .where(
                FidesResume.privacy_request_id == privacy_request_id,
                FidesResume.resumed_at.is_(None),
                FidesResume.abandoned_at.is_(None),
                or_(
                    FidesResume.attempted_at.is_(None),
                    FidesResume.attempted_at < now - timedelta(seconds=CLAIM_SECONDS),
                ),
            )
            .values(attempts=FidesResume.attempts + 1, attempted_at=now)
            .returning(FidesResume.reply_to, FidesResume.token, FidesResume.attempts)
        ).first()
    if claimed is None:
        return False
    reply_to, token, attempts = claimed
    assert settings.fides_url is not None
    try:
        response = httpx.post(
            settings.fides_url.rstrip("/") + reply_to,
            json={"derived_identity": {}},
            headers={"Authorization": f"Bearer {token}"},
            timeout=TIMEOUT_SECONDS,
        )
        status, said = response.status_code, response.text[:300]
    except httpx.HTTPError as error:
        status, said = None, f"{type(error).__name__}: {error}"[:300]
    if status == 200:
        return _end(services, privacy_request_id, abandoned=False, outcome="resumed")
    if status == 400:  # Fides moved on without us (its state is no longer paused): nothing left to resume
        return _end(services, privacy_request_id, abandoned=False, outcome=f"Fides answered 400: {said}")
    if status in (401, 403) or attempts >= settings.callback_max_attempts:  # an expired token, or out of tries
        log.warning("Fides privacy request %s not resumed: %s %s", privacy_request_id, status, said)
        return _end(services, privacy_request_id, abandoned=True, outcome=f"Fides answered {status}: {said}")
    with services.factory() as session, session.begin():
        row = session.get(FidesResume, privacy_request_id)
        if row is not None:
            row.outcome = f"attempt {attempts}: {status or 'no answer'}: {said}"
    return False


def _end(services: Services, privacy_request_id: str, *, abandoned: bool, outcome: str) -> bool:
    """The row is done: the token is dropped (it can no longer be of use), the outcome kept."""
    with services.factory() as session, session.begin():
        row = session.get(FidesResume, privacy_request_id)
        if row is not None:
            row.token, row.outcome = None, outcome
            if abandoned:
                row.abandoned_at = utcnow()
            else:
                row.resumed_at = utcnow()
    if abandoned:
        log.warning("Fides privacy request %s: %s", privacy_request_id, outcome)
    return True
