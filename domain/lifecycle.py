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
    awaiting_approval ──> queued (approved) | cancelled (denied, or cancelled by its submitter)

A request on a model that requires approval (or with MCU_REQUIRE_APPROVAL) enters in `awaiting_approval`
instead of `queued`: no task is sent, no job may take it, and coalescing never adds it to a job, until a key
with `requests:approve` other than the submitter's decides (domain/approval.py).
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

from domain.tasks import CLEANUP_REQUEST, DELIVER_CALLBACK, MATERIALIZE_SELECTION, RUN_REQUEST, Sender
from models import Callback, DeletionRequest, Event, record_event, utcnow
from models.audit import start_chains
from models.bulk import insert_rows


class State(StrEnum):
    AWAITING_APPROVAL = "awaiting_approval"
    QUEUED = "queued"
    RUNNING = "running"
    AWAITING_SELECTION = "awaiting_selection"
    MATERIALIZING = "materializing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


S = State
TRANSITIONS: dict[State, frozenset[State]] = {  # in the order of a request's life (GET /v1/meta lists them so)
    S.AWAITING_APPROVAL: frozenset({S.QUEUED, S.CANCELLED}),  # approved | denied (domain/approval.py)
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
ENTRY_STATES = frozenset({S.AWAITING_APPROVAL, S.QUEUED})  # where a new request starts
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


def submit_many(session: Session, entries: Sequence[tuple[dict[str, Any], dict[str, Any]]], *, actor: str) -> None:
    """New requests, each a row of `deletion_requests` (domain/requests.py `new_request`) with its first event's
    detail, enter the life cycle in their row's `state` (`awaiting_approval` when approval is required, domain/
    requests.py `enter`), else `queued`: inserted with their first audit events in one multi-row insert
    each, not a round trip per request nor an ORM object each (bulk intake files a thousand at once). Every new
    request, one or a thousand, comes in here.

    Run tasks go out after commit: for a lone request, and for the first new request of each model in a batch.
    The batch's others are left to the reconciler's next round (MCU_RECONCILE_INTERVAL_SECONDS, their row says
    the task is owed: `dispatched_at` is unset), while a worker runs the first: a broker message costs about a
    millisecond of the API's CPU, more than the rest of filing the request. A member of a coalesced job needs
    none (its leader's job runs it)."""
    if not entries:
        return
    for row, _ in entries:
        if row.setdefault("state", S.QUEUED) not in ENTRY_STATES:
            raise ValueError(f"a request cannot start in {row['state']}")
    events = start_chains(session, [(row, "state_changed", row["state"], actor, detail) for row, detail in entries])
    insert_rows(session, DeletionRequest, [row for row, _ in entries])
    insert_rows(session, Event, events)
    started: set[str] = set()
    for row, _ in entries:
        send = row.get("job_id") is None and row["model_id"] not in started
        started.add(row["model_id"])
        _queue_follow_ups(session, row["id"], row["state"], row["callback_url"], tasks=send)  # none awaiting approval


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


def _queue_follow_ups(
    session: Session, request_id: str, state: State, callback_url: str | None, *, tasks: bool = True
) -> None:
    for task in FOLLOW_UPS.get(state, ()) if tasks else ():
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


def send_follow_ups_after_commit(factory: sessionmaker[Session], dispatcher: Sender) -> None:
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
        dispatched = []
        for task, args in session.info.pop(_COMMITTED, []):
            try:
                if dispatcher.send(task, *args) and task == RUN_REQUEST:
                    dispatched.append(args[0])
            except Exception:  # the reconciler sends what is left unsent
                log.warning("follow-up %s for %s not sent", task, args[0], exc_info=True)
        try:  # one statement for a bulk intake's thousand runs
            mark_dispatched(factory, dispatched)
        except Exception:  # unmarked: the reconciler re-sends them after a while (tasks are idempotent)
            log.warning("dispatch of %d runs not recorded", len(dispatched), exc_info=True)


def mark_dispatched(factory: sessionmaker[Session], request_ids: list[str]) -> None:
    """When the run task last went out: the reconciler re-sends a queued request only after a while."""
    if request_ids:
        with factory() as session, session.begin():
            session.execute(
                update(DeletionRequest).where(DeletionRequest.id.in_(request_ids)).values(dispatched_at=utcnow())
            )
