"""Resolving a forget selector (sample ids, subject ids or classes) to training-set rows in one query."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from api.errors import invalid
from models import Sample

MAX_NAMED = 20


@dataclass(frozen=True)
class ForgetSet:
    positions: list[int]  # train positions, sorted
    fingerprint: str  # sha256 of the sorted sample ids, one per line


def _in_list(session: Session, column: Any, values: list[Any], kind: str) -> ColumnElement[bool]:
    """`column IN values` with a single bound parameter, whatever the list's length."""
    if session.get_bind().dialect.name == "postgresql":
        element = ARRAY(column.type)
        return column == func.any(bindparam(f"{kind}_list", values, type_=element))
    subquery = select(text("value")).select_from(func.json_each(bindparam(f"{kind}_list", json.dumps(values))))
    return column.in_(subquery.scalar_subquery())


def _named(values: list[Any]) -> str:
    shown = ", ".join(repr(v) for v in values[:MAX_NAMED])
    return shown + (f" and {len(values) - MAX_NAMED} more" if len(values) > MAX_NAMED else "")


def resolve_forget(session: Session, dataset_id: str, num_train: int, num_classes: int, kind: str,
                   values: list[Any]) -> ForgetSet:
    """Rows of the training split named by the selector; 422 naming whatever is unknown or invalid."""
    wanted = list(dict.fromkeys(values))
    columns = select(Sample.sample_id, Sample.split, Sample.position, Sample.subject_id, Sample.label) \
        .where(Sample.dataset_id == dataset_id)
    if kind == "classes":
        bad = [c for c in wanted if not 0 <= c < num_classes]
        if bad:
            raise invalid(f"classes out of range [0, {num_classes}): {_named(bad)}",
                          [{"loc": ["forget", "classes"], "msg": f"out of range: {bad[:MAX_NAMED]}"}])
        rows = session.execute(columns.where(Sample.split == "train", _in_list(session, Sample.label, wanted, kind)))
    else:
        column = Sample.sample_id if kind == "sample_ids" else Sample.subject_id
        rows = session.execute(columns.where(_in_list(session, column, wanted, kind)))
    rows = rows.all()
    if kind == "sample_ids":
        found = {r.sample_id for r in rows}
        unknown = [s for s in wanted if s not in found]
        if unknown:
            raise invalid(f"unknown sample ids: {_named(unknown)}",
                          [{"loc": ["forget", "sample_ids"], "msg": f"unknown: {unknown[:MAX_NAMED]}"}])
        in_test = [r.sample_id for r in rows if r.split != "train"]
        if in_test:
            raise invalid(f"sample ids in the test split cannot be forgotten (the model never trained on them): "
                          f"{_named(in_test)}", [{"loc": ["forget", "sample_ids"], "msg": "test split"}])
    elif kind == "subject_ids":
        found = {r.subject_id for r in rows}
        unknown = [s for s in wanted if s not in found]
        if unknown:
            raise invalid(f"unknown subject ids: {_named(unknown)}",
                          [{"loc": ["forget", "subject_ids"], "msg": f"unknown: {unknown[:MAX_NAMED]}"}])
    train = [r for r in rows if r.split == "train"]
    if not train:
        raise invalid("the forget set is empty: no training samples match", [{"loc": ["forget"], "msg": "empty"}])
    if len(train) >= num_train:
        raise invalid("the forget set is the whole training set: nothing would be retained",
                      [{"loc": ["forget"], "msg": "whole training set"}])
    sample_ids = sorted(r.sample_id for r in train)
    digest = hashlib.sha256("\n".join(sample_ids).encode()).hexdigest()
    return ForgetSet(sorted(r.position for r in train), digest)
