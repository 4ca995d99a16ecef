"""`Idempotency-Key` on creating POSTs: the same key and body replay the first response; another body is 422.

The record is written in the same transaction as the resource, and a unique constraint on
(caller, route, key) decides races: of 20 concurrent POSTs with one key exactly one commits, the others
replay it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Header
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from domain.problems import invalid
from models import IdempotencyRecord

T = TypeVar("T")
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", max_length=200, description="Replays the first response for the same body."),
]


def fingerprint(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def find_previous(
    session: Session, principal: str, route: str, key: str | None, body_sha256: str
) -> IdempotencyRecord | None:
    """The earlier record for this key, or None; a different body under the same key is a 422."""
    if key is None:
        return None
    record = session.scalar(
        select(IdempotencyRecord).where(
            IdempotencyRecord.principal == principal, IdempotencyRecord.route == route, IdempotencyRecord.key == key
        )
    )
    if record is not None and record.body_sha256 != body_sha256:
        raise invalid(
            f"Idempotency-Key '{key}' was already used with a different request body",
            [{"loc": ["header", "Idempotency-Key"], "msg": "reused with a different body"}],
        )
    return record


def remember(
    session: Session, principal: str, route: str, key: str | None, body_sha256: str, resource_id: str, status_code: int
) -> None:
    if key is not None:
        session.add(
            IdempotencyRecord(
                principal=principal,
                route=route,
                key=key,
                body_sha256=body_sha256,
                resource_id=resource_id,
                status_code=status_code,
            )
        )


def create_once(
    session: Session,
    principal: str,
    route: str,
    key: str | None,
    body_sha256: str,
    create: Callable[[Session], str],
    load: Callable[[Session, str], T],
    status_code: int,
) -> tuple[T, int]:
    """Run `create` (returns the new resource id) and commit, unless this key already made a resource.
    The resource is loaded for the response before the commit: on SQLite a read after it would queue for
    the write lock again, and time out under load for a resource already committed."""
    previous = find_previous(session, principal, route, key, body_sha256)
    if previous is not None:
        return load(session, previous.resource_id), previous.status_code
    session.commit()  # the lookup's transaction ends: `create` may upload for a while before it writes
    try:
        resource_id = create(session)
        remember(session, principal, route, key, body_sha256, resource_id, status_code)
        resource = load(session, resource_id)
        session.commit()
        return resource, status_code
    except IntegrityError:
        session.rollback()
        previous = find_previous(session, principal, route, key, body_sha256)
        if previous is None:
            raise
        return load(session, previous.resource_id), previous.status_code
