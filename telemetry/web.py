"""The API's part: a server span per HTTP request, and the request's subject bound for its log lines."""

from __future__ import annotations

import re
from typing import Any

from opentelemetry import context
from starlette.types import ASGIApp, Receive, Scope, Send

from telemetry.context import bound, fresh

# Probes and scrapes every few seconds would bury the requests worth tracing.
UNTRACED_URLS = "/healthz,/readyz,/metrics"
# Only ids of the service's own shape (models/tables.py `new_id`) are taken from a path into the logs.
_SUBJECTS = (
    (re.compile(r"^/v1/deletion-requests/(req_[0-9a-f]{20})(?:/|$)"), "request_id"),
    (re.compile(r"^/v1/models/(mdl_[0-9a-f]{20})(?:/|$)"), "model_id"),
)


class BindPathIds:
    """The deletion request (or model) a path names is bound for the request's log lines, the access line
    included. A new request's id is bound where it is made (domain/requests.py)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        fields = {name: found.group(1) for pattern, name in _SUBJECTS if (found := pattern.match(path))}
        with bound(**fields):
            await self.app(scope, receive, send)


class FreshContext:
    """Each HTTP request starts with no span and no bound fields. Without this a request inherits its
    connection's previous one: uvicorn resumes reading a paused connection (a large body) from inside the
    app, and asyncio runs the connection's later callbacks, which start the next requests, in the context
    of that moment."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = context.attach(context.Context())
        try:
            with fresh():
                await self.app(scope, receive, send)
        finally:
            context.detach(token)


def instrument_app(app: Any) -> None:
    """Bind path ids, and make the server spans (one per request; not one per body chunk, which an upload
    has thousands of). FastAPI's instrumentation wraps the whole middleware stack, so its span covers every
    middleware's work; FreshContext wraps that."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    app.add_middleware(BindPathIds)
    FastAPIInstrumentor.instrument_app(app, excluded_urls=UNTRACED_URLS, exclude_spans=["receive", "send"])
    traced_stack = app.build_middleware_stack  # the instrumentation's: the app's stack inside its middleware
    app.build_middleware_stack = lambda: FreshContext(traced_stack())
