"""`GET /v1/signing-key`: the public keys that verify proof-of-erasure reports. No authentication: anyone
who holds a report (a regulator, the data subject) must be able to check it."""

from __future__ import annotations

from fastapi import APIRouter, Request

from api.deps import SessionDep, SessionRoute
from api.schemas import SigningKeysOut
from domain.signing import published_keys

router = APIRouter(prefix="/v1/signing-key", tags=["compliance evidence"], route_class=SessionRoute)


@router.get("", response_model=SigningKeysOut)
def signing_keys(request: Request, session: SessionDep) -> dict[str, object]:
    current = request.app.state.signing_keys.current()  # made on first use
    keys = published_keys(session)
    return {"current": next(k for k in keys if k.key_id == current.key_id), "keys": keys}
