"""Scoped API keys: stored as sha256 hashes; `MCU_BOOTSTRAP_API_KEY` carries every scope."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session
from starlette.types import Scope

from domain.problems import Problem
from models import ApiKey, new_id, utcnow

SCOPES = (
    "datasets:write",
    "models:write",
    "models:read",
    "requests:write",
    "requests:read",
    "requests:select",
    "requests:approve",  # the approval gate (domain/approval.py): never for the submitter's own requests
    "admin",
)
KEY_PREFIX = "mcu_"
PRINCIPAL = "mcu.principal"  # where a request's scope keeps its authorized caller (api/admission.py)


@dataclass(frozen=True)
class Principal:
    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_key(
    session: Session, name: str, scopes: list[str], expires_at: datetime | None = None
) -> tuple[ApiKey, str]:
    """A new key row and its secret; the secret is returned once and only its hash is stored."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scopes {unknown}; known: {', '.join(SCOPES)}")
    if not scopes:
        raise ValueError("a key needs at least one scope")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        id=new_id("key"), name=name, key_hash=hash_key(secret), scopes=sorted(set(scopes)), expires_at=expires_at
    )
    session.add(row)
    return row, secret


def list_api_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))


def revoke_api_key(session: Session, name: str) -> bool:
    """Revoke the key named `name` from now on; False when no such active key exists."""
    row = session.scalar(select(ApiKey).where(ApiKey.name == name, ApiKey.revoked_at.is_(None)))
    if row is None:
        return False
    row.revoked_at = utcnow()
    return True


def authenticate(session: Session, secret: str, bootstrap_key: str | None) -> Principal | None:
    if bootstrap_key and hmac.compare_digest(secret.encode(), bootstrap_key.encode()):
        return Principal("bootstrap", frozenset(SCOPES))
    row = session.scalar(
        select(ApiKey).where(
            ApiKey.key_hash == hash_key(secret),
            ApiKey.revoked_at.is_(None),
            or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > utcnow()),
        )
    )
    return Principal(row.name, frozenset(row.scopes)) if row else None


def bearer_token(scope: Scope) -> str | None:
    """The key of `Authorization: Bearer <key>` in an ASGI scope's headers, as FastAPI's HTTPBearer reads it."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer":
                return None
            return token.strip() or None
    return None


def authorize(state: Any, secret: str | None, scope: str | None) -> Principal:
    """The caller holding `secret`, allowed `scope` (None: any valid key), else a 401 / 403 problem. `state` is
    the app's: its settings (the bootstrap key) and read sessions."""
    if not secret:  # refused before touching the database
        raise Problem(
            401, "missing API key: send 'Authorization: Bearer <key>'", headers={"WWW-Authenticate": "Bearer"}
        )
    bootstrap = state.settings.bootstrap_api_key.get_secret_value() if state.settings.bootstrap_api_key else None
    with state.read_session_factory() as session:  # held for this one lookup, not the request
        principal = authenticate(session, secret, bootstrap)
    if principal is None:
        raise Problem(401, "unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"})
    if scope is not None and not principal.allows(scope):
        raise Problem(403, f"this API key lacks the scope '{scope}'")
    return principal
