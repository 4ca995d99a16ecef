"""Scoped API keys: stored as sha256 hashes; `MCU_BOOTSTRAP_API_KEY` carries every scope."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import ApiKey, new_id

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


def create_api_key(session: Session, name: str, scopes: list[str]) -> tuple[ApiKey, str]:
    """A new key row and its secret; the secret is returned once and only its hash is stored."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scopes {unknown}; known: {', '.join(SCOPES)}")
    if not scopes:
        raise ValueError("a key needs at least one scope")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(id=new_id("key"), name=name, key_hash=hash_key(secret), scopes=sorted(set(scopes)))
    session.add(row)
    return row, secret


def authenticate(session: Session, secret: str, bootstrap_key: str | None) -> Principal | None:
    if bootstrap_key and hmac.compare_digest(secret.encode(), bootstrap_key.encode()):
        return Principal("bootstrap", frozenset(SCOPES))
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(secret), ApiKey.revoked_at.is_(None)))
    return Principal(row.name, frozenset(row.scopes)) if row else None
