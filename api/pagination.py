"""Keyset pagination with opaque tokens: `?page_size=` (default 50, max 500) and `?page_token=`."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Query
from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute

from api.errors import invalid

PageSize = Annotated[int, Query(ge=1, le=500, description="Items per page (default 50, max 500).")]
PageToken = Annotated[str | None, Query(description="The `next_page_token` of the previous page.")]


def encode_token(created_at: datetime, id_: str) -> str:
    raw = json.dumps({"c": created_at.isoformat(), "i": id_}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> tuple[datetime, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        at = datetime.fromisoformat(data["c"])  # issued tokens are UTC; a forged one may overflow converting
        return (at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)), str(data["i"])
    except (ValueError, KeyError, TypeError, OverflowError) as error:
        raise invalid("page_token is not a token this API issued", [{"loc": ["query", "page_token"],
                                                                     "msg": "invalid page token"}]) from error


def newest_first(query: Select[Any], created: InstrumentedAttribute[Any], id_: InstrumentedAttribute[Any],
                 page_size: int, page_token: str | None) -> Select[Any]:
    """Order newest first and start after the token's row; fetches one extra row to detect more."""
    if page_token:
        at, last_id = decode_token(page_token)
        query = query.where(or_(created < at, and_(created == at, id_ < last_id)))
    return query.order_by(created.desc(), id_.desc()).limit(page_size + 1)


def page(rows: list[Any], page_size: int) -> tuple[list[Any], str | None]:
    if len(rows) <= page_size:
        return rows, None
    last = rows[page_size - 1]
    return rows[:page_size], encode_token(last.created_at, last.id)
