"""Keyset pagination with opaque tokens: newest first by (created_at, id), or ascending by an integer key."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute

from domain.inputs import parse_json
from domain.problems import invalid

T = TypeVar("T")


@dataclass(frozen=True)
class PageOf(Generic[T]):
    items: list[T]
    next_page_token: str | None


def _encode(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _decode(token: str) -> dict[str, Any]:
    try:
        # Strict: a forged token's text (a lone surrogate, NUL) must not reach the database.
        data = parse_json(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not isinstance(data, dict):
            raise TypeError("not an object")
        return data
    except (ValueError, TypeError) as error:
        raise _bad_token() from error


def _bad_token() -> Exception:
    return invalid(
        "page_token is not a token this API issued", [{"loc": ["query", "page_token"], "msg": "invalid page token"}]
    )


def _page(rows: list[Any], page_size: int, token_of: Any) -> PageOf[Any]:
    if len(rows) <= page_size:
        return PageOf(rows, None)
    return PageOf(rows[:page_size], _encode(token_of(rows[page_size - 1])))


def newest_first(
    query: Select[Any],
    created: InstrumentedAttribute[Any],
    id_: InstrumentedAttribute[Any],
    page_size: int,
    page_token: str | None,
) -> Select[Any]:
    """Order newest first and start after the token's row; fetches one extra row to detect more."""
    if page_token:
        data = _decode(page_token)
        try:
            at = datetime.fromisoformat(data["c"])  # issued tokens are UTC; a forged one may overflow converting
            at = at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)
            last_id = str(data["i"])
        except (ValueError, KeyError, TypeError, OverflowError) as error:
            raise _bad_token() from error
        query = query.where(or_(created < at, and_(created == at, id_ < last_id)))
    return query.order_by(created.desc(), id_.desc()).limit(page_size + 1)


def newest_page(rows: list[Any], page_size: int) -> PageOf[Any]:
    return _page(rows, page_size, lambda last: {"c": last.created_at.isoformat(), "i": last.id})


def ascending(
    query: Select[Any], key: InstrumentedAttribute[Any], page_size: int, page_token: str | None
) -> Select[Any]:
    """Order by an integer key, oldest first, starting after the token's key."""
    if page_token:
        after = _decode(page_token).get("k")
        if isinstance(after, bool) or not isinstance(after, int) or not -(2**63) <= after < 2**63:
            raise _bad_token()
        query = query.where(key > after)
    return query.order_by(key).limit(page_size + 1)


def ascending_page(rows: list[Any], page_size: int, key: str) -> PageOf[Any]:
    return _page(rows, page_size, lambda last: {"k": getattr(last, key)})
