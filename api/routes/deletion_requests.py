"""`/v1/deletion-requests`: submit, follow, select a point, cancel; and the audit events."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from api.auth import Principal
from api.deps import DispatcherDep, SessionDep, SessionFactoryDep, SettingsDep, require
from api.errors import ApiError, invalid
from api.forget import drop_already_erased, resolve_forget
from api.idempotency import IdempotencyKey, create_once, fingerprint
from api.pagination import PageSize, PageToken, newest_first, page
from api.schemas import (
    CurveOut,
    CurvePointOut,
    DeletionRequestIn,
    DeletionRequestOut,
    ErrorOut,
    EventOut,
    EventsOut,
    Page,
    ProgressOut,
    SelectionIn,
    SelectionOut,
)
from models import CurvePoint, Dataset, DeletionRequest, Event, Model, new_id, record_event, utcnow
from settings import Settings
from unlearning.config import ConfigError, resolve_config
from worker.dispatch import CLEANUP_REQUEST, MATERIALIZE_SELECTION, dispatch_run

router = APIRouter(prefix="/v1/deletion-requests", tags=["deletion requests"])

STATES = ("queued", "running", "awaiting_selection", "materializing", "succeeded", "failed", "cancelling",
          "cancelled")
FINISHED = ("succeeded", "failed", "cancelled")


def _curve(session: Session, row: DeletionRequest) -> CurveOut | None:
    if row.curve is None:
        return None
    points = session.scalars(select(CurvePoint).where(CurvePoint.request_id == row.id).order_by(CurvePoint.t)).all()
    return CurveOut(points=[CurvePointOut.model_validate(p, from_attributes=True) for p in points],
                    recommended_t=row.curve["recommended_t"], effective_region=row.curve["effective_region"],
                    targets=row.curve["targets"])


def request_out(session: Session, row: DeletionRequest) -> DeletionRequestOut:
    selection = None
    if row.selected_t is not None:
        selection = SelectionOut(t=row.selected_t, model_version=row.selected_version, selected_by=row.selected_by,
                                 selected_at=row.selected_at)
    return DeletionRequestOut(
        id=row.id, model_id=row.model_id, model_version=row.model_version, state=row.state,
        external_id=row.external_id, base_method=row.base_method, config=row.config,
        selection_mode=row.selection_mode, callback_url=row.callback_url, forget_count=row.forget_count,
        forget_fingerprint=row.forget_fingerprint, progress=ProgressOut(**row.progress), curve=_curve(session, row),
        selection=selection, error=ErrorOut(**row.error) if row.error else None, created_at=row.created_at,
        started_at=row.started_at, finished_at=row.finished_at)


def get_request_or_404(session: Session, request_id: str) -> DeletionRequest:
    row = session.get(DeletionRequest, request_id)
    if row is None:
        raise ApiError(404, f"deletion request '{request_id}' not found")
    return row


def _validated_config(body: DeletionRequestIn) -> dict[str, Any]:
    try:
        return resolve_config(body.config, body.base_method).to_dict()
    except ConfigError as error:
        loc = ["base_method"] if error.key == "base_method" else ["config", *error.key.split(".")]
        raise invalid(str(error), [{"loc": loc, "msg": error.message}]) from error


def _check_callback(url: str | None, settings: Settings) -> None:
    """Callbacks go only to allow-listed hosts: the service must not be turned into a request forger."""
    if url is None:
        return
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
        raise invalid("callback_url must be an absolute http(s) URL", [{"loc": ["callback_url"], "msg": "invalid"}])
    if not settings.callback_host_allowed(url):
        raise invalid("callback_url's host is not in the callback allow-list (MCU_CALLBACK_ALLOWED_HOSTS)",
                      [{"loc": ["callback_url"], "msg": "host not allowed"}])


@router.post("", status_code=202, response_model=DeletionRequestOut,
             responses={202: {"headers": {"Location": {"schema": {"type": "string"}}}}})
def create_request(body: DeletionRequestIn, session: SessionDep, factory: SessionFactoryDep, dispatcher: DispatcherDep,
                   settings: SettingsDep,
                   principal: Annotated[Principal, require("requests:write")],
                   idempotency_key: IdempotencyKey = None) -> JSONResponse:
    config = _validated_config(body)
    _check_callback(body.callback_url, settings)
    body_sha = fingerprint(body.model_dump(mode="json"))
    created: list[str] = []

    def create(db: Session) -> str:
        model = db.get(Model, body.model_id)
        if model is None:
            raise invalid(f"unknown model '{body.model_id}'", [{"loc": ["model_id"], "msg": "unknown model"}])
        dataset = db.get(Dataset, model.dataset_id)
        assert dataset is not None
        kind, values = body.forget.selector()
        forget, already_erased = drop_already_erased(
            db, model.id, resolve_forget(db, dataset.id, dataset.num_train, model.num_classes, kind, values))
        request_id = new_id("req")
        db.add(DeletionRequest(
            id=request_id, model_id=model.id, model_version=model.current_version, state="queued",
            external_id=body.external_id, base_method=body.base_method, config=config,
            selection_mode=body.selection, callback_url=body.callback_url, forget={kind: values},
            forget_positions=forget.positions, forget_count=len(forget.positions),
            forget_fingerprint=forget.fingerprint, progress={"phase": "queued", "fraction": 0.0},
            created_by=principal.name))
        db.flush()
        record_event(db, request_id, "state_changed", "queued", principal.name,
                     {"forget_count": len(forget.positions), "external_id": body.external_id,
                      "already_erased_by": already_erased})
        created.append(request_id)
        return request_id

    request_id, status = create_once(session, principal.name, "deletion-requests", idempotency_key, body_sha,
                                     create, 202)
    if created:  # committed above; a broker outage leaves it queued for the reconciler
        dispatch_run(factory, dispatcher, request_id)
    row = get_request_or_404(session, request_id)
    return JSONResponse(request_out(session, row).model_dump(mode="json"), status_code=status,
                        headers={"Location": f"/v1/deletion-requests/{request_id}"})


@router.get("/{request_id}", response_model=DeletionRequestOut)
def get_request(request_id: str, session: SessionDep,
                _: Annotated[Principal, require("requests:read")]) -> DeletionRequestOut:
    return request_out(session, get_request_or_404(session, request_id))


@router.get("", response_model=Page[DeletionRequestOut])
def list_requests(session: SessionDep, _: Annotated[Principal, require("requests:read")],
                  model_id: Annotated[str | None, Query(max_length=40)] = None,
                  state: Annotated[str | None, Query(description=" | ".join(STATES))] = None,
                  page_size: PageSize = 50, page_token: PageToken = None) -> Page[DeletionRequestOut]:
    query = select(DeletionRequest)
    if model_id is not None:
        query = query.where(DeletionRequest.model_id == model_id)
    if state is not None:
        if state not in STATES:
            raise invalid(f"state must be one of {', '.join(STATES)}", [{"loc": ["query", "state"],
                                                                          "msg": "unknown state"}])
        query = query.where(DeletionRequest.state == state)
    rows = session.scalars(newest_first(query, DeletionRequest.created_at, DeletionRequest.id, page_size,
                                        page_token)).all()
    items, token = page(list(rows), page_size)
    return Page[DeletionRequestOut](items=[request_out(session, r) for r in items], next_page_token=token)


@router.get("/{request_id}/curve", response_model=CurveOut)
def get_curve(request_id: str, session: SessionDep, _: Annotated[Principal, require("requests:read")]) -> CurveOut:
    row = get_request_or_404(session, request_id)
    curve = _curve(session, row)
    if curve is None:
        raise ApiError(409, f"the curve of '{request_id}' is not ready (state: {row.state})")
    return curve


def _transition(session: Session, request_id: str, allowed: tuple[str, ...], values: dict[str, Any],
                *also: ColumnElement[bool]) -> bool:
    """Compare-and-set on the state, so two racing callers cannot both move a request."""
    result = session.execute(update(DeletionRequest).where(DeletionRequest.id == request_id,
                                                           DeletionRequest.state.in_(allowed), *also)
                             .values(**values))
    return result.rowcount == 1


@router.post("/{request_id}/selection", status_code=202, response_model=DeletionRequestOut)
def select_point(request_id: str, body: SelectionIn, session: SessionDep, dispatcher: DispatcherDep,
                 principal: Annotated[Principal, require("requests:select")]) -> JSONResponse:
    row = get_request_or_404(session, request_id)
    moved = _transition(session, request_id, ("awaiting_selection",),
                        {"state": "materializing", "selected_t": body.t, "selected_by": principal.name,
                         "selected_at": utcnow(), "heartbeat_at": None})
    if not moved:
        session.rollback()
        raise ApiError(409, f"a point can be selected only in state awaiting_selection (state: {row.state})")
    record_event(session, request_id, "state_changed", "materializing", principal.name, {"t": body.t})
    session.commit()
    dispatcher.send(MATERIALIZE_SELECTION, request_id)
    session.refresh(row)
    return JSONResponse(request_out(session, row).model_dump(mode="json"), status_code=202)


@router.post("/{request_id}/cancel", status_code=202, response_model=DeletionRequestOut)
def cancel_request(request_id: str, session: SessionDep, dispatcher: DispatcherDep,
                   principal: Annotated[Principal, require("requests:write")]) -> JSONResponse:
    row = get_request_or_404(session, request_id)
    previous_state = row.state
    at_once = {"state": "cancelled", "cancel_requested": True, "finished_at": utcnow()}
    # A selection no worker has claimed yet (no heartbeat) is cancelled at once too: a worker claims only
    # `materializing`, so a `cancelling` request that nobody holds would never be finished.
    if _transition(session, request_id, ("queued", "awaiting_selection"), at_once) or \
            _transition(session, request_id, ("materializing",), at_once, DeletionRequest.heartbeat_at.is_(None)):
        record_event(session, request_id, "state_changed", "cancelled", principal.name)
        session.commit()
        dispatcher.send(CLEANUP_REQUEST, request_id)  # artifacts of an awaiting request are deleted
    elif _transition(session, request_id, ("running", "materializing", "cancelling"),
                     {"state": "cancelling", "cancel_requested": True}):
        if previous_state != "cancelling":
            record_event(session, request_id, "state_changed", "cancelling", principal.name)
        session.commit()
    else:
        session.rollback()
        raise ApiError(409, f"request '{request_id}' is already {previous_state}")
    session.refresh(row)
    return JSONResponse(request_out(session, row).model_dump(mode="json"), status_code=202)


@router.get("/{request_id}/events", response_model=EventsOut)
def list_events(request_id: str, session: SessionDep, _: Annotated[Principal, require("requests:read")]) -> EventsOut:
    get_request_or_404(session, request_id)
    rows = session.scalars(select(Event).where(Event.request_id == request_id).order_by(Event.id)).all()
    return EventsOut(items=[EventOut(at=e.at, type=e.type, state=e.state, actor=e.actor, detail=e.detail)
                            for e in rows])

