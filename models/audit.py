"""The audit trail: one event row per state change or milestone of a deletion request, hash-chained.

Each request's events form a chain: an event's `hash` is sha256 over a canonical encoding of the event
(request, time, type, state, actor, detail) and `prev_hash`, the hash of the request's previous event
(`GENESIS` for its first). Editing, deleting or reordering a row breaks the chain at that row, and
`verify_chains` names it. A report carries its request's head hash, so dropping the newest events shows too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.tables import DeletionRequest, Event, utcnow

GENESIS = "0" * 64


def canonical_json(value: Any) -> bytes:
    """One byte string per value: sorted keys, no spaces, UTF-8. What hashes and signatures are taken over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def event_hash(request_id: str, at: datetime, type_: str, state: str | None, actor: str | None,
               detail: dict[str, Any] | None, prev_hash: str) -> str:
    body = {"request_id": request_id, "at": at.astimezone(UTC).isoformat(timespec="microseconds"), "type": type_,
            "state": state, "actor": actor, "detail": detail, "prev_hash": prev_hash}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def record_event(session: Session, request_id: str, type_: str, state: str | None = None, actor: str | None = None,
                 detail: dict[str, Any] | None = None) -> None:
    # The request row is locked so that two transactions cannot both extend the chain from the same event
    # (a transition's UPDATE holds the lock already; SQLite's writers are serialised anyway).
    session.execute(select(DeletionRequest.id).where(DeletionRequest.id == request_id).with_for_update())
    prev = _newest_hash(session, request_id)
    at = utcnow()
    session.add(Event(request_id=request_id, at=at, type=type_, state=state, actor=actor, detail=detail,
                      prev_hash=prev, hash=event_hash(request_id, at, type_, state, actor, detail, prev)))
    session.flush()  # the next event of this request, in this transaction, must see this one's hash


def _newest_hash(session: Session, request_id: str) -> str:
    return session.scalar(select(Event.hash).where(Event.request_id == request_id)
                          .order_by(Event.id.desc()).limit(1)) or GENESIS


def head_hash(session: Session, request_id: str) -> tuple[str, int]:
    """The hash of the request's newest event, and how many events its chain has."""
    count = session.scalar(select(func.count()).select_from(Event).where(Event.request_id == request_id))
    return _newest_hash(session, request_id), count or 0


@dataclass(frozen=True)
class BrokenLink:
    request_id: str
    event_id: int
    reason: str


@dataclass
class ChainCheck:
    events: int = 0
    chains: int = 0
    broken: list[BrokenLink] = field(default_factory=list)  # the first broken link of each broken chain


def verify_chains(session: Session, request_id: str | None = None) -> ChainCheck:
    """Walk every request's chain (or one request's) in order and recompute each hash."""
    query = select(Event).order_by(Event.request_id, Event.id).execution_options(yield_per=1000)
    if request_id is not None:
        query = query.where(Event.request_id == request_id)
    check, current, expected_prev, broken = ChainCheck(), None, GENESIS, False
    for event in session.scalars(query):
        check.events += 1
        if event.request_id != current:
            current, expected_prev, broken = event.request_id, GENESIS, False
            check.chains += 1
        if not broken:
            reason = None
            if event.prev_hash != expected_prev:
                reason = "its prev_hash is not the previous event's hash (an event was deleted, inserted or reordered)"
            elif event.hash != event_hash(event.request_id, event.at, event.type, event.state, event.actor,
                                          event.detail, event.prev_hash):
                reason = "its hash does not match its content (the row was edited)"
            if reason is not None:
                broken = True
                check.broken.append(BrokenLink(event.request_id, event.id, reason))
            expected_prev = event.hash
        session.expunge(event)
    return check
