"""The audit trail: one event row per state change or milestone of a deletion request."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from models.tables import Event


def record_event(session: Session, request_id: str, type_: str, state: str | None = None, actor: str | None = None,
                 detail: dict[str, Any] | None = None) -> None:
    session.add(Event(request_id=request_id, type=type_, state=state, actor=actor, detail=detail))
