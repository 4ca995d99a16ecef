"""Scoped API keys: stored as sha256 hashes; `MCU_BOOTSTRAP_API_KEY` carries every scope."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from models import ApiKey, new_id, utcnow

SCOPES = ("datasets:write", "models:write", "models:read", "requests:write", "requests:read", "requests:select",
          "admin")
KEY_PREFIX = "mcu_"


@dataclass(frozen=True)
class Principal:
    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_key(session: Session, name: str, scopes: list[str], expires_at: datetime | None = None
                   ) -> tuple[ApiKey, str]:
    """A new key row and its secret; the secret is returned once and only its hash is stored."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scopes {unknown}; known: {', '.join(SCOPES)}")
    if not scopes:
        raise ValueError("a key needs at least one scope")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(id=new_id("key"), name=name, key_hash=hash_key(secret), scopes=sorted(set(scopes)),
                 expires_at=expires_at)
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
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(secret), ApiKey.revoked_at.is_(None),
                                              or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > utcnow())))
    return Principal(row.name, frozenset(row.scopes)) if row else None
