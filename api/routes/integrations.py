"""`/v1/integrations`: endpoints that compliance platforms call in their own protocol (domain/fides.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header

from api.auth import Principal
from api.deps import SessionDep, SessionRoute, SettingsDep, require
from api.schemas import FidesWebhookIn, FidesWebhookOut
from domain import fides

router = APIRouter(prefix="/v1/integrations", tags=["integrations"], route_class=SessionRoute)


@router.post("/fides/webhook", response_model=FidesWebhookOut)
def fides_webhook(
    body: FidesWebhookIn,
    session: SessionDep,
    settings: SettingsDep,
    principal: Annotated[Principal, require("requests:write")],
    reply_to: Annotated[str | None, Header(alias="reply-to", max_length=500)] = None,
    reply_to_token: Annotated[str | None, Header(alias="reply-to-token", max_length=8192)] = None,
) -> dict[str, Any]:
    """A Fides policy webhook (two-way, pre-execution, on an erasure policy): files the subject-wide erasure of
    the identity and answers `{"halt": true}`; the privacy request is resumed once the erasure succeeded."""
    answer = fides.accept(session, body.model_dump(), reply_to, reply_to_token, settings, principal.name)
    session.commit()
    return answer
