"""Deletion requests as the API sees them: submit, read, list, select a point, cancel, and the audit events.

State changes go through `domain.lifecycle`; this module decides which change a caller's action means.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast
from urllib.parse import urlsplit

from sqlalchemy import func, not_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session, defer

import telemetry
from domain import approval, coalesce
from domain.catalog import ModelState
from domain.erasure import ACKNOWLEDGE_PREFIX, METRICS, criterion_for, judge, point_at
from domain.forget import ForgetSet, drop_already_erased, resolve_forget
from domain.lifecycle import (
    OPEN,
    WORKER_HELD,
    State,
    enqueue_after_commit,
    overdue_at,
    sources_of,
    submit_many,
    transition,
)
from domain.pagination import PageOf, ascending, ascending_page, newest_first, newest_page
from domain.problems import Problem, invalid, not_found
from domain.tasks import RUN_REQUEST
from models import Dataset, DeletionRequest, Event, Model, new_id, record_event, utcnow
from settings import Settings
from unlearning.config import ConfigError, base_method_spec, resolve_config


def get(session: Session, request_id: str) -> DeletionRequest:
    row = session.get(DeletionRequest, request_id)
    if row is None:
        raise not_found("deletion request", request_id)
    return row


def validated_config(
    config: dict[str, Any], base_method: str, erasure_defaults: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The MCU config with every default filled in, and the erasure criterion (`config.erasure` over the
    service's defaults); 422 naming the dotted key of a bad value."""
    config = dict(config)
    criterion = criterion_for(config.pop("erasure", None), erasure_defaults)
    resolved = _mcu_config(config, base_method)
    for flag, knob, what in (
        ("require_relearning", "relearn_steps", "the relearning check"),
        ("require_membership", "shadow_models", "per-sample membership scores"),
    ):
        if criterion[flag] and not resolved["evidence"][knob]:
            raise invalid(
                f"config.erasure.{flag} needs {what}: config.evidence.{knob} must be above 0",
                [{"loc": ["config", "evidence", knob], "msg": f"must be above 0 when config.erasure.{flag} is set"}],
            )
    return resolved, criterion


def _mcu_config(config: dict[str, Any], base_method: str) -> dict[str, Any]:
    try:
        if not (method := base_method_spec(base_method)).offered:  # the registry says (unlearning/config.py)
            raise invalid(
                f"base_method {base_method!r} is not offered by the service ({method.description})",
                [{"loc": ["base_method"], "msg": "not offered"}],
            )
        return resolve_config(config, base_method).to_dict()
    except ConfigError as error:
        loc = ["base_method"] if error.key == "base_method" else ["config", *error.key.split(".")]
        raise invalid(str(error), [{"loc": loc, "msg": error.message}]) from error


def check_callback(url: str | None, settings: Settings) -> None:
    """Callbacks go only to allow-listed hosts: the service must not be turned into a request forger."""
    if url is None:
        return
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a port out of range or not a number)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid("callback_url must be an absolute http(s) URL", [{"loc": ["callback_url"], "msg": "invalid"}])
    if not settings.callback_host_allowed(url):
        raise invalid(
            "callback_url's host is not in the callback allow-list (MCU_CALLBACK_ALLOWED_HOSTS)",
            [{"loc": ["callback_url"], "msg": "host not allowed"}],
        )


def received_when(received_at: datetime | None) -> datetime:
    """When the data subject's request reached the controller: now, or earlier (the deadline runs from it)."""
    now = utcnow()
    if received_at is None:
        return now
    if received_at.tzinfo is None:
        raise invalid(
            "received_at needs a time zone (e.g. 2026-11-28T09:00:00Z)",
            [{"loc": ["received_at"], "msg": "no time zone"}],
        )
    if received_at > now + CLOCK_SKEW:
        raise invalid("received_at lies in the future", [{"loc": ["received_at"], "msg": "in the future"}])
    if received_at < now - MAX_RECEIVED_AGE:
        raise invalid(
            f"received_at is more than {MAX_RECEIVED_AGE.days} days ago", [{"loc": ["received_at"], "msg": "too old"}]
        )
    return received_at


CLOCK_SKEW = timedelta(minutes=5)
MAX_RECEIVED_AGE = timedelta(days=365)


@dataclass(frozen=True)
class Submission:
    """What a caller asks of a request beyond its forget set (validated: config with defaults, criterion)."""

    base_method: str
    config: dict[str, Any]
    erasure_criterion: dict[str, Any]
    selection_mode: str
    external_id: str | None
    callback_url: str | None
    received_at: datetime
    response_days: int


def create(
    session: Session,
    *,
    model_id: str,
    selector: tuple[str, list[Any]],
    base_method: str,
    config: dict[str, Any],
    erasure_criterion: dict[str, Any],
    selection_mode: str,
    external_id: str | None,
    callback_url: str | None,
    received_at: datetime,
    response_days: int,
    actor: str,
    coalescing: bool = False,
) -> str:
    """A queued request (or one awaiting approval) for the rows the selector names (rows already erased left out);
    returns its id. With
    `coalescing`, it joins a queued job of the same model and settings (domain/coalesce.py)."""
    model = ready_model(session, model_id)
    dataset = session.get(Dataset, model.dataset_id)
    assert dataset is not None
    kind, values = selector
    forget, already_erased = drop_already_erased(
        session, model.id, resolve_forget(session, dataset.id, dataset.num_train, model.num_classes, kind, values)
    )
    submission = Submission(
        base_method, config, erasure_criterion, selection_mode, external_id, callback_url, received_at, response_days
    )
    row = new_request(model, selector, forget, submission, actor)
    telemetry.bind(request_id=row["id"])  # the rest of the API call's log lines, and its span
    enter(session, [(row, {"already_erased_by": already_erased})], actor=actor, coalescing=coalescing)
    return str(row["id"])


def ready_model(session: Session, model_id: str) -> Model:
    """The model a request is filed on: 422 when unknown, 409 unless `ready`."""
    model = session.get(Model, model_id)
    if model is None:
        raise invalid(f"unknown model '{model_id}'", [{"loc": ["model_id"], "msg": "unknown model"}])
    if model.state != ModelState.READY:
        raise Problem(
            409,
            f"model '{model_id}' is {model.state}, not ready: deletion requests need a ready model"
            + (f" ({model.error['detail']})" if model.error else ""),
            slug="model-not-ready",
            title="Model not ready",
        )
    return model


QUEUED_PROGRESS = {"phase": State.QUEUED.value, "fraction": 0.0}  # never changed in place
AWAITING_PROGRESS = {"phase": State.AWAITING_APPROVAL.value, "fraction": 0.0}  # likewise


def new_request(
    model: Model, selector: tuple[str, list[Any]], forget: ForgetSet, submission: Submission, actor: str
) -> dict[str, Any]:
    """The row of a new request for `forget` (resolved, rows already erased left out), for `enter`; every row
    has the same keys (one multi-row insert)."""
    kind, values = selector
    salt = secrets.token_hex(16)
    return {
        "id": new_id("req"),
        "model_id": model.id,
        "model_version": model.current_version,
        "external_id": submission.external_id,
        "base_method": submission.base_method,
        "config": submission.config,
        "selection_mode": submission.selection_mode,
        "callback_url": submission.callback_url,
        "forget": {kind: values},
        "forget_positions": forget.positions,
        "forget_count": len(forget.positions),
        "forget_fingerprint": forget.fingerprint,
        "forget_salt": salt,
        "forget_salted_fingerprint": forget.salted_fingerprint(salt),
        "erasure_criterion": submission.erasure_criterion,
        "received_at": submission.received_at,
        "due_at": submission.received_at + timedelta(days=submission.response_days),
        "progress": QUEUED_PROGRESS,  # one object for a batch's rows: encoded once (models/bulk.py)
        "job_id": None,
        "created_by": actor,
        "created_at": utcnow(),
    }


def enter(
    session: Session, entries: list[tuple[dict[str, Any], dict[str, Any]]], *, actor: str, coalescing: bool
) -> None:
    """New requests (`new_request` rows), each with what its first event adds (e.g. `already_erased_by`),
    submitted together; with `coalescing` one by one, each joining a queued job of its model and settings when
    there is one. A request whose model requires approval (domain/approval.py) starts `awaiting_approval` and
    joins no job: a job's requests all run at once."""

    def detail(row: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        return {"forget_count": row["forget_count"], "external_id": row["external_id"]} | extra

    gated = {model_id: approval.required(session, model_id) for model_id in {row["model_id"] for row, _ in entries}}
    for row, _ in entries:
        row["state"] = State.AWAITING_APPROVAL if gated[row["model_id"]] else State.QUEUED
        if row["state"] == State.AWAITING_APPROVAL:
            row["progress"] = AWAITING_PROGRESS
    if not coalescing:
        submit_many(session, [(row, detail(row, extra)) for row, extra in entries], actor=actor)
        return
    for row, extra in entries:
        # (a transient copy of the row: what a leader is compared on)
        leader = coalesce.find_leader(session, DeletionRequest(**row)) if row["state"] == State.QUEUED else None
        row["job_id"] = leader.id if leader else None
        submit_many(session, [(row, detail(row, extra) | ({"joined_job": leader.id} if leader else {}))], actor=actor)
        if leader is not None:
            record_event(session, leader.id, "member_joined", State.QUEUED, actor, {"request": row["id"]})


FORGET_SET = (DeletionRequest.forget, DeletionRequest.forget_positions)


def page_of_requests(
    session: Session,
    *,
    model_id: str | None,
    state: State | None,
    overdue: bool | None,
    page_size: int,
    page_token: str | None,
) -> PageOf[DeletionRequest]:
    """Newest first; curve points come in one extra query for the whole page (the relationship is `selectin`),
    not one per row. The forget set (up to a million ids and positions a row) is not part of a listed request:
    never loaded."""
    query = select(DeletionRequest).options(*(defer(c, raiseload=True) for c in FORGET_SET))
    if model_id is not None:
        query = query.where(DeletionRequest.model_id == model_id)
    if state is not None:
        query = query.where(DeletionRequest.state == state)
    if overdue is not None:
        late = overdue_at(utcnow())
        query = query.where(late if overdue else not_(late))
    rows = session.scalars(
        newest_first(query, DeletionRequest.created_at, DeletionRequest.id, page_size, page_token)
    ).all()
    return newest_page(list(rows), page_size)


def curve(session: Session, request_id: str) -> dict[str, Any]:
    row = get(session, request_id)
    if row.curve is None:
        raise Problem(409, f"the curve of '{request_id}' is not ready (state: {row.state})")
    return row.curve


def select_point(
    session: Session, request_id: str, t: float, actor: str, acknowledge: str | None = None
) -> DeletionRequest:
    """awaiting_selection → materializing at `t`; commits. 409 in any other state, and for a point that fails
    the erasure criterion unless `acknowledge` begins with "erasure criterion not met"."""
    member = get(session, request_id)
    if member.state != State.AWAITING_SELECTION:
        raise Problem(409, f"a point can be selected only in state awaiting_selection (state: {member.state})")
    request_id = member.job_id or request_id  # a coalesced job's point is chosen for all its requests
    row = get(session, request_id)
    judgement = None
    if row.state == State.AWAITING_SELECTION and row.curve_summary is not None:
        points = [{"t": p.t} | {m: getattr(p, m) for m in METRICS} for p in row.points]
        judgement = judge(
            point_at(points, t),
            row.curve_summary["targets"],
            len(coalesce.job_positions(session, row)),
            row.erasure_criterion,
            row.curve_summary.get("erasure_power"),  # an undecidable criterion fails under the withhold policy
        )
        acknowledged = (acknowledge or "").strip().lower().startswith(ACKNOWLEDGE_PREFIX)
        if not judgement.met and not acknowledged:
            raise Problem(
                409,
                f"the point at t = {t} does not meet the erasure criterion: "
                + "; ".join(judgement.reasons)
                + f'. To publish it anyway, send "acknowledge": '
                f'"{judgement.acknowledgement}"',
                slug="erasure-criterion-not-met",
                title="Erasure criterion not met",
                # For clients to phrase the fix their own way (the CLI: --acknowledge '...').
                errors=[
                    {
                        "loc": ["acknowledge"],
                        "msg": "; ".join(judgement.reasons),
                        "acknowledge": judgement.acknowledgement,
                    }
                ],
            )
    ack = acknowledge if judgement is not None and not judgement.met else None
    if not transition(
        session,
        request_id,
        State.MATERIALIZING,
        actor=actor,
        from_=[State.AWAITING_SELECTION],
        values={
            "selected_t": t,
            "selected_by": actor,
            "selected_at": utcnow(),
            "heartbeat_at": None,
            "selection_acknowledgement": ack,
        },
        detail={"t": t} | ({"acknowledgement": ack} if ack else {}),
    ):
        session.rollback()
        raise Problem(409, f"a point can be selected only in state awaiting_selection (state: {row.state})")
    session.commit()
    session.refresh(member)
    return member


def cancel(session: Session, request_id: str, actor: str) -> DeletionRequest:
    """Cancelled at once when no worker holds the request; else `cancelling` until its worker stops. Commits.
    Which states allow which of these comes from the transition table (domain/lifecycle.py)."""
    row = get(session, request_id)
    previous = row.state
    at_once = {"cancel_requested": True, "finished_at": utcnow()}
    held = sources_of(State.CANCELLING)  # a worker holds the job: it stops at its next step
    free = tuple(state for state in sources_of(State.CANCELLED) if state not in WORKER_HELD)  # nobody holds it
    if row.job_id is not None:  # a member leaves its coalesced job; a running job restarts without it
        moved = transition(
            session,
            request_id,
            State.CANCELLED,
            actor=actor,
            values=at_once,
            detail={"left_job": row.job_id},
            from_=[*free, *held],
        )
        if moved and previous == State.RUNNING:
            session.execute(
                update(DeletionRequest).where(DeletionRequest.id == row.job_id).values(restart_requested=True)
            )
    else:
        # A job yet to make its curve (still to run, or running) goes on without its leader: its first member
        # leads it now (a running one from the start).
        if previous in (*sources_of(State.RUNNING), State.RUNNING) and (
            new_leader := coalesce.promote(session, request_id, actor)
        ):
            enqueue_after_commit(session, RUN_REQUEST, new_leader)
        # A held state no worker has claimed yet (no heartbeat: a selection, which the API itself moves to
        # `materializing`) is cancelled at once too: a `cancelling` request that nobody holds would never finish.
        moved = (
            transition(session, request_id, State.CANCELLED, actor=actor, values=at_once, from_=free)
            or transition(
                session,
                request_id,
                State.CANCELLED,
                actor=actor,
                values=at_once,
                from_=held,
                where=[DeletionRequest.heartbeat_at.is_(None)],
            )
            or transition(
                session, request_id, State.CANCELLING, actor=actor, values={"cancel_requested": True}, from_=held
            )
            or previous == State.CANCELLING
        )
    if not moved:
        session.rollback()
        raise Problem(409, f"request '{request_id}' is already {previous}")
    session.commit()
    session.refresh(row)
    return row


def extend(session: Session, request_id: str, days: int, reason: str, actor: str) -> DeletionRequest:
    """Move the deadline once, by at most MAX_EXTENSION_DAYS, with the reason kept; commits. 409 for a
    request already extended or already answered."""
    row = get(session, request_id)
    if row.state not in OPEN:
        raise Problem(409, f"request '{request_id}' is {row.state}: its answer is given, no deadline to extend")
    extension = {"days": days, "reason": reason, "by": actor, "at": utcnow().isoformat()}
    due_at = row.due_at + timedelta(days=days)
    # (an UPDATE's result is a CursorResult; Session.execute is typed as returning a plain Result)
    extended = cast(
        CursorResult[Any],
        session.execute(
            update(DeletionRequest)
            .where(DeletionRequest.id == request_id, DeletionRequest.due_extension.is_(None))
            .values(due_at=due_at, due_extension=extension)
        ),
    ).rowcount
    if not extended:
        session.rollback()
        raise Problem(
            409,
            f"the deadline of '{request_id}' was extended already (once per request)",
            slug="already-extended",
            title="Already extended",
        )
    record_event(
        session,
        request_id,
        "due_date_extended",
        row.state,
        actor,
        {"days": days, "reason": reason, "due_at": due_at.isoformat()},
    )
    session.commit()
    session.refresh(row)
    return row


# The job's own steps, as the worker records them; later clean-up events (also by "worker") are not reports on
# the job.
JOB_STEPS = ("claimed", "resumed", "state_changed", "phase_started", "resumed_from_checkpoint", "job_restarted")


def diagnostics(session: Session, row: DeletionRequest) -> dict[str, Any]:
    """What GET of one request adds (docs/api.md): the job's seconds per phase and its
    training statistics, both null until its curve is trained, and when a worker last reported on it."""
    summary = row.curve_summary or {}
    return {
        "timings": summary.get("timings"),
        "training": summary.get("training"),
        "last_heartbeat_at": last_report(session, row),
    }


def last_report(session: Session, row: DeletionRequest) -> datetime | None:
    """The worker clears `heartbeat_at` when it lets the job go (the lease is free again); what a reader wants
    is when a worker last spoke: the live heartbeat, else the time of its last recorded step of the job. A
    coalesced member shows its leader's heartbeat while the job runs (the worker beats on the leader only)."""
    beats = [row.heartbeat_at]
    if row.job_id is not None and row.state in WORKER_HELD:
        beats.append(session.scalar(select(DeletionRequest.heartbeat_at).where(DeletionRequest.id == row.job_id)))
    beats.append(
        session.scalar(
            select(func.max(Event.at)).where(
                Event.request_id == row.id, Event.actor == "worker", Event.type.in_(JOB_STEPS)
            )
        )
    )
    return max((beat for beat in beats if beat is not None), default=None)


def page_of_events(session: Session, request_id: str, page_size: int, page_token: str | None) -> PageOf[Event]:
    get(session, request_id)
    rows = session.scalars(
        ascending(select(Event).where(Event.request_id == request_id), Event.id, page_size, page_token)
    ).all()
    return ascending_page(list(rows), page_size, "id")
