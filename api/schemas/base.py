"""What every body of API v1 is built on: strict request bodies, responses read from ORM rows, problems, pages."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """A request body. Every text field is a `Line`/`Lines`/`Prose`/`Url` and free JSON a `JsonObject`
    (domain/inputs.py; tests/api/test_strict_input.py checks that no field is left out)."""

    # extra: a typo in a field name is a 422, never silently ignored; NaN and Infinity are never numbers.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Out(BaseModel):
    """A response body, read straight from the ORM row's attributes. A lone surrogate stored before the input
    checks is replaced where the body is rendered, once per response (api/deps.py `SessionRoute`)."""

    model_config = ConfigDict(from_attributes=True)


class ProblemOut(Out):
    type: str
    title: str
    detail: str
    errors: list[dict[str, Any]] | None = None


T = TypeVar("T")


class Page(Out, Generic[T]):
    items: list[T]
    next_page_token: str | None
