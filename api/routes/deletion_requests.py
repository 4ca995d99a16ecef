"""`/v1/deletion-requests`: submit, follow, attack and select a point, cancel; and the audit events
(domain/requests.py, domain/point_attacks.py)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy.orm import Session

from api.auth import Principal
from api.deps import SessionDep, SessionRoute, SettingsDep, require
from api.idempotency import IdempotencyKey, create_once, fingerprint
from api.pagination import PageSize, PageToken
from api.schemas import (
    ApprovalIn,
    CurveOut,
    DeletionRequestDetailOut,
    DeletionRequestIn,
    DeletionRequestOut,
    EventOut,
    ExtensionIn,
    Page,
    PointAttackIn,
    PointAttackOut,
    PointAttacksOut,
    SelectionIn,
)
from domain import approval, evidence, point_attacks, requests
from domain.inputs import Line
from domain.lifecycle import State
from models import DeletionRequest, PointAttack

router = APIRouter(prefix="/v1/deletion-requests", tags=["deletion requests"], route_class=SessionRoute)


@router.post(
    "",
    status_code=202,
    response_model=DeletionRequestOut,
    responses={202: {"headers": {"Location": {"schema": {"type": "string"}}}}},
)
def create_request(
    body: DeletionRequestIn,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    principal: Annotated[Principal, require("requests:write")],
    idempotency_key: IdempotencyKey = None,
) -> DeletionRequest:
    config, criterion = requests.validated_config(body.config, body.base_method, settings.erasure_defaults)
    requests.check_callback(body.callback_url, settings)
    received_at = requests.received_when(body.received_at)

    def create(db: Session) -> str:
        return requests.create(
            db,
            model_id=body.model_id,
            selector=body.forget.selector(),
            base_method=body.base_method,
            config=config,
            erasure_criterion=criterion,
            selection_mode=body.selection,
            external_id=body.external_id,
            callback_url=body.callback_url,
            received_at=received_at,
            response_days=settings.response_days,
            actor=principal.name,
            coalescing=settings.coalesce_seconds > 0,
        )

    request, response.status_code = create_once(
        session,
        principal.name,
        "deletion-requests",
        idempotency_key,
        fingerprint(body.model_dump(mode="json")),
        create,
        requests.get,
        202,
    )
    response.headers["Location"] = f"/v1/deletion-requests/{request.id}"
    return request


@router.get("/{request_id}", response_model=DeletionRequestDetailOut)
def get_request(
    request_id: str, session: SessionDep, _: Annotated[Principal, require("requests:read")]
) -> dict[str, Any]:
    """The request with its job's timings, last heartbeat and training statistics (api/schemas/diagnostics.py)."""
    row = requests.get(session, request_id)
    return DeletionRequestOut.model_validate(row).model_dump() | requests.diagnostics(session, row)


@router.get("", response_model=Page[DeletionRequestOut])
def list_requests(
    session: SessionDep,
    _: Annotated[Principal, require("requests:read")],
    model_id: Annotated[Line | None, Query(max_length=40)] = None,
    state: State | None = None,
    overdue: Annotated[bool | None, Query(description="Open requests past their due_at (or not)")] = None,
    page_size: PageSize = 50,
    page_token: PageToken = None,
) -> object:
    return requests.page_of_requests(
        session, model_id=model_id, state=state, overdue=overdue, page_size=page_size, page_token=page_token
    )


@router.get("/{request_id}/curve", response_model=CurveOut)
def get_curve(request_id: str, session: SessionDep, _: Annotated[Principal, require("requests:read")]) -> object:
    return requests.curve(session, request_id)


@router.post("/{request_id}/selection", status_code=202, response_model=DeletionRequestOut)
def select_point(
    request_id: str, body: SelectionIn, session: SessionDep, principal: Annotated[Principal, require("requests:select")]
) -> DeletionRequest:
    return requests.select_point(session, request_id, body.t, principal.name, body.acknowledge)


@router.post("/{request_id}/attacks", status_code=202, response_model=PointAttackOut)
def attack_point(
    request_id: str,
    body: PointAttackIn,
    session: SessionDep,
    response: Response,
    principal: Annotated[Principal, require("requests:select")],
) -> PointAttack:
    """The auditor's attacks on φ(t) before choosing it: 202 when filed, 200 when filed already (a failed one is
    filed again); 409 unless the request awaits selection (domain/point_attacks.py)."""
    row, filed = point_attacks.file_attacks(session, request_id, body.t, principal.name)
    response.status_code = 202 if filed else 200
    return row


@router.get("/{request_id}/attacks", response_model=PointAttacksOut)
def list_point_attacks(
    request_id: str, session: SessionDep, _: Annotated[Principal, require("requests:read")]
) -> object:
    return point_attacks.attacks_of(session, request_id)


@router.post("/{request_id}/approval", response_model=DeletionRequestOut)
def decide_approval(
    request_id: str, body: ApprovalIn, session: SessionDep, principal: Annotated[Principal, require("requests:approve")]
) -> DeletionRequest:
    """Approve (→ queued: its job starts) or deny (→ cancelled) a request awaiting approval, with the reason; by a
    key other than the submitter's (403), only while it awaits approval (409)."""
    return approval.decide(session, request_id, body.decision, body.reason, principal.name)


@router.post("/{request_id}/extension", response_model=DeletionRequestOut)
def extend_deadline(
    request_id: str, body: ExtensionIn, session: SessionDep, principal: Annotated[Principal, require("requests:write")]
) -> DeletionRequest:
    return requests.extend(session, request_id, body.days, body.reason, principal.name)


@router.get("/{request_id}/report", responses={200: {"content": {"text/html": {}}}})
def get_report(
    request_id: str,
    request: Request,
    session: SessionDep,
    _: Annotated[Principal, require("requests:read")],
    format: Annotated[Literal["json", "html"], Query()] = "json",
) -> Response:
    """The signed proof-of-erasure report of a succeeded request (409 before, or when its audit chain is broken)."""
    signer = request.app.state.signing_keys.current()
    document = signer.sign(evidence.build_report(session, request_id, signer.private_key.public_key()))
    if format == "html":
        return HTMLResponse(evidence.render_html(document))
    return JSONResponse(document)


@router.post("/{request_id}/cancel", status_code=202, response_model=DeletionRequestOut)
def cancel_request(
    request_id: str, session: SessionDep, principal: Annotated[Principal, require("requests:write")]
) -> DeletionRequest:
    return requests.cancel(session, request_id, principal.name)


@router.get("/{request_id}/events", response_model=Page[EventOut])
def list_events(
    request_id: str,
    session: SessionDep,
    _: Annotated[Principal, require("requests:read")],
    page_size: PageSize = 50,
    page_token: PageToken = None,
) -> object:
    return requests.page_of_events(session, request_id, page_size, page_token)
