"""The evidence around a request: its audit events and the keys that sign its reports."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from api.schemas.base import Out


class EventOut(Out):
    at: datetime
    type: str
    state: str | None
    actor: str | None
    detail: dict[str, Any] | None
    prev_hash: str
    hash: str


class SigningKeyOut(Out):
    key_id: str
    algorithm: str = "Ed25519"
    public_key: str  # raw 32 bytes, base64
    created_at: datetime
    retired_at: datetime | None


class SigningKeysOut(Out):
    current: SigningKeyOut
    keys: list[SigningKeyOut]  # the current one and every retired one: old reports stay verifiable
