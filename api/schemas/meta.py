"""`GET /v1/meta`: what a client would otherwise keep a copy of. The states and transitions come from
domain/lifecycle.py, the base methods from their registry (unlearning/config.py), both read per request."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from api.schemas.base import Out


class BaseMethodOut(Out):
    name: str
    description: str
    defaults: dict[str, Any] = Field(description="the settings the method uses, with its defaults")
    config_schema: dict[str, Any] = Field(
        description="JSON Schema of a request's `config.base` for this method: only these keys, within these bounds"
    )


class MetaOut(Out):
    states: list[str] = Field(description="every state of a deletion request, in the order of its life")
    transitions: dict[str, list[str]] = Field(description="state → the states it may move to")
    open_states: list[str] = Field(description="states that still owe an answer (they have a way out)")
    terminal_states: list[str] = Field(description="final states: no way out")
    base_methods: list[BaseMethodOut] = Field(description="the base methods a deletion request may name")
    default_base_method: str = Field(description="the base method of a request that names none")
    keep_superseded_versions: int = Field(
        description="retention (MCU_KEEP_SUPERSEDED_VERSIONS): once a request succeeds, the newest this many "
        "superseded versions keep their weights; older ones' are deleted (GET .../weights then answers 410)"
    )
