"""SQL that differs between Postgres and SQLite, kept next to the tables so no other layer knows the dialect."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import bindparam, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement


def in_list(session: Session, column: Any, values: list[Any], name: str) -> ColumnElement[bool]:
    """`column IN values` with a single bound parameter, whatever the list's length (one plan, no
    parameter-count limits): `= ANY(array)` on Postgres, `IN (SELECT value FROM json_each(...))` on SQLite."""
    if session.get_bind().dialect.name == "postgresql":
        return column == func.any(bindparam(name, values, type_=ARRAY(column.type)))
    subquery = select(text("value")).select_from(func.json_each(bindparam(name, json.dumps(values))))
    return column.in_(subquery.scalar_subquery())
