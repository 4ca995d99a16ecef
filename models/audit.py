"""The audit trail: one event row per state change or milestone of a deletion request, hash-chained and sealed.

Each request's events form a chain: an event's `hash` is sha256 over a canonical encoding of the event
(request, time, type, state, actor, detail) and `prev_hash`, the hash of the request's previous event
(`GENESIS` for its first). Editing, deleting or reordering a row breaks the chain at that row.

The chain is anchored in its request's row: `chain_length`, `chain_head` (the newest event's hash) and
`chain_seal`, an Ed25519 signature by the service's signing key over the three (`seal_message`), updated by
`record_event` in the event's transaction. Someone who can write the database but does not hold the key can
delete the newest events, delete a whole chain or rewrite a chain with recomputed hashes, but cannot make a
seal for the result: `verify_chains` names each such request. Restoring an older snapshot of a request's row
and events together is not detectable from the database alone (a report issued before holds the later head).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import event as orm_event
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, object_session

from mcu_client.evidence import canonical_json  # the one canonical form: reports' signatures use it too
from models.tables import DeletionRequest, Event, utcnow

GENESIS = "0" * 64
SEAL_FORMAT = "mcu-audit-seal/1"
SEALER = "mcu.audit_sealer"  # session.info: what seals the chains a session extends (domain/signing.py)
_INSERTED = "mcu.requests_inserted"  # session.info: ids of the requests this session inserted


class Sealer(Protocol):
    def sealing_key(self, session: Session) -> Ed25519PrivateKey:
        """The current signing key, read in `session`'s transaction."""


def event_hash(
    request_id: str,
    at: datetime,
    type_: str,
    state: str | None,
    actor: str | None,
    detail: dict[str, Any] | None,
    prev_hash: str,
) -> str:
    body = {
        "request_id": request_id,
        "at": at.astimezone(UTC).isoformat(timespec="microseconds"),
        "type": type_,
        "state": state,
        "actor": actor,
        "detail": detail,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_json(body)).hexdigest()


def seal_message(request_id: str, length: int, head: str) -> bytes:
    return canonical_json({"format": SEAL_FORMAT, "request_id": request_id, "length": length, "head": head})


def seal(key: Ed25519PrivateKey, request_id: str, length: int, head: str) -> str:
    return base64.b64encode(key.sign(seal_message(request_id, length, head))).decode()


def seal_verifies(
    key: Ed25519PublicKey, request_id: str, length: int | None, head: str | None, value: str | None
) -> bool:
    if length is None or head is None or value is None:
        return False
    try:
        key.verify(base64.b64decode(value, validate=True), seal_message(request_id, length, head))
    except (InvalidSignature, ValueError):
        return False
    return True


@orm_event.listens_for(DeletionRequest, "after_insert")
def _note_inserted(_mapper: Any, _connection: Any, target: DeletionRequest) -> None:
    """A request this session inserted may start its chain unsealed; any other unsealed row is from before
    migration 0008 or had its seal removed, and record_event never seals it (that would launder tampering)."""
    session = object_session(target)
    if session is not None:
        session.info.setdefault(_INSERTED, set()).add(target.id)


def record_event(
    session: Session,
    request_id: str,
    type_: str,
    state: str | None = None,
    actor: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    # The request row is locked so that two transactions cannot both extend the chain from the same event
    # (a transition's UPDATE holds the lock already; SQLite's writers are serialised anyway).
    anchor = session.execute(
        select(DeletionRequest.chain_length, DeletionRequest.chain_head, DeletionRequest.chain_seal)
        .where(DeletionRequest.id == request_id)
        .with_for_update()
    ).one()
    prev = _newest_hash(session, request_id)
    at = utcnow()
    new_hash = event_hash(request_id, at, type_, state, actor, detail, prev)
    session.add(
        Event(
            request_id=request_id,
            at=at,
            type=type_,
            state=state,
            actor=actor,
            detail=detail,
            prev_hash=prev,
            hash=new_hash,
        )
    )
    session.flush()  # the next event of this request, in this transaction, must see this one's hash
    key = _sealer(session).sealing_key(session)
    new = prev == GENESIS and anchor.chain_seal is None and request_id in session.info.get(_INSERTED, ())
    if new or (
        anchor.chain_head == prev
        and seal_verifies(key.public_key(), request_id, anchor.chain_length, anchor.chain_head, anchor.chain_seal)
    ):
        length = (anchor.chain_length or 0) + 1
        session.execute(
            update(DeletionRequest)
            .where(DeletionRequest.id == request_id)
            .values(chain_length=length, chain_head=new_hash, chain_seal=seal(key, request_id, length, new_hash))
        )
    # Otherwise the chain was broken before this event: it is extended but stays broken for verify_chains.


def start_chains(
    session: Session, firsts: list[tuple[dict[str, Any], str, str | None, str | None, Any]]
) -> list[dict[str, Any]]:
    """The first event of each new request, given as `(its row, type, state, actor, detail)` before it is
    inserted: what `record_event` makes for a first event, hashed from GENESIS and sealed onto the row's chain
    anchor, without the reads a stored chain needs. Returns the events' rows, to insert after the requests."""
    key = _sealer(session).sealing_key(session)
    events = []
    for row, type_, state, actor, detail in firsts:
        at = utcnow()
        new_hash = event_hash(row["id"], at, type_, state, actor, detail, GENESIS)
        row |= {"chain_length": 1, "chain_head": new_hash, "chain_seal": seal(key, row["id"], 1, new_hash)}
        events.append(
            {
                "request_id": row["id"],
                "at": at,
                "type": type_,
                "state": state,
                "actor": actor,
                "detail": detail,
                "prev_hash": GENESIS,
                "hash": new_hash,
            }
        )
    return events


def _sealer(session: Session) -> Sealer:
    sealer = session.info.get(SEALER)
    if sealer is None:
        raise RuntimeError("this session's factory has no audit sealer: make a domain.signing.SigningKeys for it")
    return sealer


def _newest_hash(session: Session, request_id: str) -> str:
    return (
        session.scalar(select(Event.hash).where(Event.request_id == request_id).order_by(Event.id.desc()).limit(1))
        or GENESIS
    )


def head_hash(session: Session, request_id: str) -> tuple[str, int]:
    """The hash of the request's newest event, and how many events its chain has."""
    count = session.scalar(select(func.count()).select_from(Event).where(Event.request_id == request_id))
    return _newest_hash(session, request_id), count or 0


@dataclass(frozen=True)
class BrokenLink:
    request_id: str
    event_id: int | None  # None: the fault is in the chain's anchor, not at one event
    reason: str


@dataclass
class ChainCheck:
    events: int = 0
    chains: int = 0
    broken: list[BrokenLink] = field(default_factory=list)  # the first fault of each broken chain


@dataclass
class _Chain:
    request_id: str
    length: int | None  # the anchor as stored
    head: str | None
    seal: str | None
    events: int = 0  # the chain as found
    newest: str = GENESIS
    broken_link: BrokenLink | None = None


def _chains(session: Session, request_id: str | None, lock: bool = False) -> Iterator[_Chain]:
    """Every request (or one), with its events walked in order and each hash and link recomputed."""
    anchors = select(
        DeletionRequest.id, DeletionRequest.chain_length, DeletionRequest.chain_head, DeletionRequest.chain_seal
    ).order_by(DeletionRequest.id)
    events = select(Event).order_by(Event.request_id, Event.id).execution_options(yield_per=1000)
    if request_id is not None:
        anchors, events = anchors.where(DeletionRequest.id == request_id), events.where(Event.request_id == request_id)
    # Locked, so that an event committed between reading a chain's anchor and its events cannot make a sound
    # chain look truncated (Postgres reads each statement at its own snapshot): a share lock for a check,
    # which record_event's row lock waits for; an update lock for re-sealing.
    chains = {row.id: _Chain(*row) for row in session.execute(anchors.with_for_update(read=not lock))}
    current: _Chain | None = None
    for event in session.scalars(events):
        if current is None or event.request_id != current.request_id:
            if current is not None:
                yield current
            current = chains.pop(event.request_id, None) or _Chain(event.request_id, None, None, None)
        current.events += 1
        if current.broken_link is None:
            reason = None
            if event.prev_hash != current.newest:
                reason = "its prev_hash is not the previous event's hash (an event was deleted, inserted or reordered)"
            elif event.hash != event_hash(
                event.request_id, event.at, event.type, event.state, event.actor, event.detail, event.prev_hash
            ):
                reason = "its hash does not match its content (the row was edited)"
            if reason is not None:
                current.broken_link = BrokenLink(event.request_id, event.id, reason)
        current.newest = event.hash
        session.expunge(event)
    if current is not None:
        yield current
    yield from chains.values()  # requests without a single event


def _fault(chain: _Chain, key: Ed25519PublicKey | None) -> str | None:
    """Why the chain is not what its seal vouches for, or None."""
    if chain.events == 0:
        return "the request has no events (its chain was deleted)"
    if chain.seal is None:
        return (
            "the chain is not sealed (a request made before migration 0008 that no key rotation has sealed "
            "yet, or its seal was removed)"
        )
    if (chain.length, chain.head) != (chain.events, chain.newest):
        return (
            f"the chain has {chain.events} events ending in {chain.newest[:12]}…, but its seal is over "
            f"{chain.length} events ending in {(chain.head or '')[:12]}… (events were deleted or added)"
        )
    if key is None or not seal_verifies(key, chain.request_id, chain.length, chain.head, chain.seal):
        return (
            "its seal does not verify with the signing key (the chain's length, head or seal was rewritten, "
            "or sealed by another key)"
        )
    return None


def verify_chains(session: Session, key: Ed25519PublicKey, request_id: str | None = None) -> ChainCheck:
    """Walk every request's chain (or one request's): each hash and link, and the seal over its length and
    head with `key`, the service's current signing key (a rotation re-seals every chain)."""
    check = ChainCheck()
    for chain in _chains(session, request_id):
        check.chains += 1
        check.events += chain.events
        if chain.broken_link is not None:
            check.broken.append(chain.broken_link)
        elif (fault := _fault(chain, key)) is not None:
            check.broken.append(BrokenLink(chain.request_id, None, fault))
    return check


@dataclass
class Resealing:
    sealed: int = 0
    first_sealed: list[str] = field(default_factory=list)  # chains that had no seal (from before 0008)
    broken: list[BrokenLink] = field(default_factory=list)  # left as they were: still broken


def reseal_chains(session: Session, previous: Ed25519PublicKey | None, new: Ed25519PrivateKey) -> Resealing:
    """When a key becomes current: every chain that verifies with the previous key, or whose links verify
    and that was never sealed, is sealed with the new one; a broken chain keeps its stale seal."""
    result = Resealing()
    for chain in list(_chains(session, None, lock=True)):
        fault = chain.broken_link.reason if chain.broken_link else _fault(chain, previous)
        unsealed = chain.broken_link is None and chain.events > 0 and chain.seal is None
        if fault is not None and not unsealed:
            result.broken.append(chain.broken_link or BrokenLink(chain.request_id, None, fault))
            continue
        session.execute(
            update(DeletionRequest)
            .where(DeletionRequest.id == chain.request_id)
            .values(
                chain_length=chain.events,
                chain_head=chain.newest,
                chain_seal=seal(new, chain.request_id, chain.events, chain.newest),
            )
        )
        result.sealed += 1
        if unsealed:
            result.first_sealed.append(chain.request_id)
    return result
