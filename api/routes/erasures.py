"""`/v1/erasures`: erase subjects (or samples) from every model that holds them, one or a bulk of up to 1,000
at once; follow their aggregate state; one signed report over all their requests (domain/subject_erasure.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from api.auth import Principal
from api.deps import SessionDep, SessionRoute, SettingsDep, require
from api.idempotency import IdempotencyKey, create_once, fingerprint
from api.pagination import PageSize, PageToken
from api.schemas import BulkErasuresIn, BulkErasuresOut, ErasureIn, ErasureOut, Page
from domain import subject_erasure
from domain.inputs import Line
from domain.problems import Problem

router = APIRouter(prefix="/v1/erasures", tags=["erasures"], route_class=SessionRoute)


@router.post(
    "",
    status_code=202,
    response_model=ErasureOut,
    responses={
        200: {"description": "its external_id named an erasure already: that one", "model": ErasureOut},
        202: {"headers": {"Location": {"schema": {"type": "string"}}}},
    },
)
def create_erasure(
    body: ErasureIn,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    principal: Annotated[Principal, require("requests:write")],
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """One deletion request per model whose training split holds the rows, filed in one transaction."""
    item = subject_erasure.prepare(body.model_dump(), settings)
    existing = False

    def create(db: Session) -> str:
        nonlocal existing
        (outcome,) = subject_erasure.file(db, [item], actor=principal.name, coalescing=settings.coalesce_seconds > 0)
        if outcome.problem is not None:
            raise outcome.problem
        assert outcome.erasure_id is not None
        existing = outcome.result == "existing"
        return outcome.erasure_id

    view, response.status_code = create_once(
        session,
        principal.name,
        "erasures",
        idempotency_key,
        fingerprint(body.model_dump(mode="json")),
        create,
        subject_erasure.get,
        202,
    )
    if existing:
        response.status_code = 200
    response.headers["Location"] = f"/v1/erasures/{view['id']}"
    return view


@router.post("/bulk", response_model=BulkErasuresOut)
def bulk_erasures(
    body: BulkErasuresIn,
    session: SessionDep,
    settings: SettingsDep,
    principal: Annotated[Principal, require("requests:write")],
) -> dict[str, Any]:
    """Up to 1,000 erasures, each idempotent through its external_id; one result per item, in order: `created`,
    `existing` (that external_id made it before) or `error` with a problem. The created ones are committed
    together; an item's error does not stop the others."""
    configs: dict[str, Any] = {}
    items: list[subject_erasure.Item | Problem] = []
    for spec in body.items:
        try:
            items.append(subject_erasure.prepare(spec.model_dump(), settings, configs))
        except Problem as problem:
            items.append(problem)
    outcomes = subject_erasure.file(session, items, actor=principal.name, coalescing=settings.coalesce_seconds > 0)
    shown = subject_erasure.shown(session, outcomes)
    session.commit()
    return {
        "items": [
            {
                "index": index,
                "external_id": spec.external_id,
                "result": outcome.result,
                "erasure": erasure,
                "error": outcome.problem.body() if outcome.problem else None,
            }
            for index, (spec, outcome, erasure) in enumerate(zip(body.items, outcomes, shown, strict=True))
        ]
    }


@router.get("/{erasure_id}", response_model=ErasureOut)
def get_erasure(
    erasure_id: str, session: SessionDep, _: Annotated[Principal, require("requests:read")]
) -> dict[str, Any]:
    return subject_erasure.get(session, erasure_id)


@router.get("", response_model=Page[ErasureOut])
def list_erasures(
    session: SessionDep,
    _: Annotated[Principal, require("requests:read")],
    external_id: Annotated[Line | None, Query(max_length=200)] = None,
    page_size: PageSize = 50,
    page_token: PageToken = None,
) -> object:
    """Newest first."""
    return subject_erasure.page(session, external_id=external_id, page_size=page_size, page_token=page_token)


@router.get("/{erasure_id}/report")
def get_report(
    erasure_id: str, request: Request, session: SessionDep, _: Annotated[Principal, require("requests:read")]
) -> Response:
    """One signed report over the erasure and each of its requests' proof-of-erasure reports; 409 until every
    request succeeded (`mcu reports verify FILE` checks it offline)."""
    signer = request.app.state.signing_keys.current()
    document = signer.sign(subject_erasure.report(session, erasure_id, signer.private_key.public_key()))
    return JSONResponse(document)
