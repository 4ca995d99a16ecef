"""The life of a deletion request: its states, the transitions between them, and what follows each.

Every state change goes through `transition` (or `claim`, when a worker takes a job): a compare-and-set on
the state, so two racing callers can never both move a request; an event in the audit trail; the same
change for the members of a coalesced job the request leads (domain/coalesce.py); and the follow-up tasks
of the new state, sent to the broker only *after* the transaction commits (a task never sees a row that is
not there yet, and a rolled-back change sends nothing). A run, materialise, clean-up or callback task lost
to a broker outage is made good by the reconciler (worker/reconciler.py): each leaves a row that says it
is owed (the request's state, `artifacts_deleted_at` / `data_erased_at`, the `callbacks` outbox).

    queued ──> running ──> awaiting_selection <─> materializing ──> succeeded
       │          │                │                  │    └──> queued (another version was published first)
       └──────────┴────────────────┴──> cancelled <───┤
                  └──────────> cancelling <───────────┘
    cancelling ──> cancelled | succeeded (the version was published first) | failed
    running | materializing ──> failed
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import event, update
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from models import Callback, DeletionRequest, record_event, utcnow
from worker.dispatch import CLEANUP_REQUEST, DELIVER_CALLBACK, MATERIALIZE_SELECTION, RUN_REQUEST, Dispatcher


class State(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    AWAITING_SELECTION = "awaiting_selection"
    MATERIALIZING = "materializing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


S = State
TRANSITIONS: dict[State, frozenset[State]] = {
    S.QUEUED: frozenset({S.RUNNING, S.CANCELLED}),
    S.RUNNING: frozenset({S.AWAITING_SELECTION, S.FAILED, S.CANCELLING, S.CANCELLED}),
    S.AWAITING_SELECTION: frozenset({S.MATERIALIZING, S.CANCELLED}),
    # Back to awaiting_selection: the point, measured, fails the erasure criterion (domain/erasure.py).
    S.MATERIALIZING: frozenset({S.SUCCEEDED, S.QUEUED, S.AWAITING_SELECTION, S.FAILED, S.CANCELLING, S.CANCELLED}),
    # A cancel that arrives once the version is published comes too late: the erasure is done.
    S.CANCELLING: frozenset({S.CANCELLED, S.FAILED, S.SUCCEEDED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
}
OPEN = frozenset(state for state, targets in TRANSITIONS.items() if targets)  # still owes its answer
WORKER_HELD = frozenset({S.RUNNING, S.MATERIALIZING, S.CANCELLING})  # a worker heartbeats while it holds these
MAX_EXTENSION_DAYS = 60  # GDPR Art. 12(3): "extended by two further months where necessary"


def overdue_at(now: datetime) -> ColumnElement[bool]:
    """Still owes its answer and is past its due_at (the list filter, the gauge and the reconciler's notice)."""
    return DeletionRequest.state.in_(OPEN) & (DeletionRequest.due_at < now)


CALLBACK_STATES = frozenset({S.AWAITING_SELECTION, S.SUCCEEDED, S.FAILED, S.CANCELLED})
# Tasks sent when a request enters a state. Artifacts are deleted on every way out that publishes or
# abandons the curve: they were trained on the forget set.
FOLLOW_UPS: dict[State, tuple[str, ...]] = {
    S.QUEUED: (RUN_REQUEST,),
    S.MATERIALIZING: (MATERIALIZE_SELECTION,),
    S.SUCCEEDED: (CLEANUP_REQUEST,),
    S.CANCELLED: (CLEANUP_REQUEST,),
}
_PENDING = "mcu_follow_ups"
_COMMITTED = "mcu_follow_ups_committed"
log = logging.getLogger(__name__)


def sources_of(target: State) -> tuple[State, ...]:
    return tuple(state for state, targets in TRANSITIONS.items() if target in targets)


def submit(session: Session, request: DeletionRequest, *, actor: str, detail: dict[str, Any]) -> None:
    """A new request enters the life cycle in `queued`; its run task goes out after commit."""
    request.state = S.QUEUED
    session.add(request)
    session.flush()
    record_event(session, request.id, "state_changed", S.QUEUED, actor, detail)
    _queue_follow_ups(session, request.id, S.QUEUED, request.callback_url)


def transition(
    session: Session,
    request_id: str,
    to: State,
    *,
    actor: str,
    from_: Iterable[State] | None = None,
    values: dict[str, Any] | None = None,
    detail: dict[str, Any] | None = None,
    where: Sequence[ColumnElement[bool]] = (),
) -> bool:
    """Move the request to `to` if it is in one of `from_` (default: every state allowed to reach `to`) and
    matches `where`. Records the event and queues the follow-ups for after commit; False if it did not move."""
    sources = tuple(from_) if from_ is not None else sources_of(to)
    illegal = [state for state in sources if to not in TRANSITIONS[state]]
    if illegal:
        raise ValueError(f"no transition {illegal} -> {to}")
    moved = session.execute(
        update(DeletionRequest)
        .where(DeletionRequest.id == request_id, DeletionRequest.state.in_(sources), *where)
        .values(state=to, **(values or {}))
        .returning(DeletionRequest.callback_url)
    ).first()  # what the follow-ups need
    if moved is None:
        return False
    record_event(session, request_id, "state_changed", to, actor, detail)
    _queue_follow_ups(session, request_id, to, moved.callback_url)
    _follow_leader(session, request_id, sources, to, actor, values or {}, detail)
    return True


def _follow_leader(
    session: Session,
    leader_id: str,
    sources: tuple[State, ...],
    to: State,
    actor: str,
    values: dict[str, Any],
    detail: dict[str, Any] | None,
) -> None:
    """A coalesced job's members (domain/coalesce.py) make the leader's state change too, with their own
    events and follow-ups (callbacks, clean-up)."""
    followed = session.execute(
        update(DeletionRequest)
        .where(DeletionRequest.job_id == leader_id, DeletionRequest.state.in_(sources))
        .values(state=to, **values)
        .returning(DeletionRequest.id, DeletionRequest.callback_url)
    ).all()
    for member_id, callback_url in followed:
        record_event(session, member_id, "state_changed", to, actor, (detail or {}) | {"job": leader_id})
        _queue_follow_ups(session, member_id, to, callback_url)


def claim(
    session: Session,
    request_id: str,
    from_state: State,
    to_state: State,
    stale_before: datetime,
    worker: str | None = None,
) -> DeletionRequest | None:
    """A worker takes the job: `from_state` → `to_state`. A request already in `to_state` is taken only
    while nobody holds it (no heartbeat yet, or one older than `stale_before`: its worker died).
    The event names the `worker`. Returns the row (detached) when this worker now holds it."""
    row = session.get(DeletionRequest, request_id, with_for_update=True)
    if row is None or row.job_id is not None:
        return None  # unknown, or a member of a coalesced job: its leader's job runs it
    if row.state == to_state:
        if row.heartbeat_at is not None and row.heartbeat_at >= stale_before:
            return None  # alive elsewhere
        event_type = "claimed" if row.heartbeat_at is None else "resumed"
    elif row.state == from_state and to_state in TRANSITIONS[from_state]:
        event_type = "state_changed"
    else:
        return None
    now = utcnow()
    row.state, row.heartbeat_at = to_state, now
    row.started_at = row.started_at or now
    record_event(session, request_id, event_type, to_state, "worker", {"worker": worker} if worker else None)
    if event_type == "state_changed":
        _follow_leader(session, request_id, (from_state,), to_state, "worker", {"started_at": row.started_at}, None)
    session.flush()
    session.expunge(row)
    return row


def _queue_follow_ups(session: Session, request_id: str, state: State, callback_url: str | None) -> None:
    for task in FOLLOW_UPS.get(state, ()):
        enqueue_after_commit(session, task, request_id)
    if state in CALLBACK_STATES and callback_url:
        owe_callback(session, request_id, state.value)


def owe_callback(session: Session, request_id: str, event: str) -> None:
    """Record the callback in the outbox (this transaction) and send its task once the transaction commits;
    if that send is lost, the reconciler sends it again (worker/reconciler.py `resend_callbacks`)."""
    message_id = new_message_id()
    session.add(Callback(message_id=message_id, request_id=request_id, event=event))
    enqueue_after_commit(session, DELIVER_CALLBACK, request_id, event, message_id)


def enqueue_after_commit(session: Session, task: str, *args: object) -> None:
    """Send `task` once this session's transaction commits (see `send_follow_ups_after_commit`)."""
    session.info.setdefault(_PENDING, []).append((task, args))


def new_message_id() -> str:
    return f"msg_{secrets.token_hex(12)}"


def send_follow_ups_after_commit(factory: sessionmaker[Session], dispatcher: Dispatcher) -> None:
    """Sessions of `factory` send the follow-ups of their transitions once they commit; a rollback drops them.
    They go out when the transaction has ended and given its connection back to the pool: marking a run
    as dispatched takes a connection of its own, and a caller holding one while waiting for another
    deadlocks the pool under load."""

    @event.listens_for(factory, "after_commit")
    def _committed(session: Session) -> None:
        session.info[_COMMITTED] = session.info.get(_COMMITTED, []) + session.info.pop(_PENDING, [])

    @event.listens_for(factory, "after_rollback")
    def _drop(session: Session) -> None:
        session.info.pop(_PENDING, None)

    @event.listens_for(factory, "after_transaction_end")
    def _send(session: Session, transaction: SessionTransaction) -> None:
        if transaction.parent is not None:
            return
        # The transaction is committed: nothing here may fail the caller, who must learn it succeeded.
        for task, args in session.info.pop(_COMMITTED, []):
            try:
                if dispatcher.send(task, *args) and task == RUN_REQUEST:
                    mark_dispatched(factory, [args[0]])
            except Exception:  # the reconciler sends what is left unsent
                log.warning("follow-up %s for %s not sent", task, args[0], exc_info=True)


def mark_dispatched(factory: sessionmaker[Session], request_ids: list[str]) -> None:
    """When the run task last went out: the reconciler re-sends a queued request only after a while."""
    if request_ids:
        with factory() as session, session.begin():
            session.execute(
                update(DeletionRequest).where(DeletionRequest.id.in_(request_ids)).values(dispatched_at=utcnow())
            )
