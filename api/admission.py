"""What a request must pass before its body is read: a declared size within `MCU_MAX_REQUEST_BYTES`, and,
on a route that needs an API key, a valid key with the route's scope.

FastAPI reads a form body (spooling its files to disk) before it runs any dependency, so the key check of
`api.deps.require` alone came after the whole body: anyone could fill the disk with uploads that end in a
401. Here the first read of the body authorizes the caller (the route is known by then), and the body is
cut off at the limit when it has no Content-Length (chunked). A refusal closes the connection, so the
server stops reading the rest.
"""

from __future__ import annotations

from anyio import to_thread
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import PRINCIPAL, authorize, bearer_token
from api.deps import AUTHENTICATED, scope_of
from api.errors import problem_response
from domain.problems import Problem

CLOSE = {"Connection": "close"}


def too_large(limit: int) -> Problem:
    return Problem(413, f"the request body is larger than {limit} bytes (MCU_MAX_REQUEST_BYTES)", headers=CLOSE)


def route_scope(route: object) -> str | None:
    """The scope the route's `require(...)` checks (AUTHENTICATED for a key alone); None on a public route."""
    pending = list(getattr(getattr(route, "dependant", None), "dependencies", ()))
    while pending:
        dependency = pending.pop()
        if dependency.call is not None and (scope := scope_of(dependency.call)) is not None:
            return scope
        pending.extend(dependency.dependencies)
    return None


class Admission:
    def __init__(self, app: ASGIApp, max_request_bytes: int) -> None:
        self.app, self.limit = app, max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")  # the server has checked it is a number
        if int(declared) > self.limit:  # refused unread
            await problem_response(too_large(self.limit))(scope, receive, send)
            return
        received, authorized = 0, False

        async def admitted() -> Message:
            nonlocal received, authorized
            if not authorized and PRINCIPAL not in scope:  # the first read: routing is done, the route known
                authorized = True
                required = route_scope(scope.get("route"))
                if required is not None:
                    try:
                        state = scope["app"].state
                        scope[PRINCIPAL] = await to_thread.run_sync(
                            authorize,
                            state,
                            bearer_token(scope),
                            None if required == AUTHENTICATED else required,
                            limiter=state.db_limiter,
                        )
                    except Problem as refusal:  # raised inside the body parser, which passes HTTPException on
                        headers = {**(refusal.headers or {}), **CLOSE}
                        raise HTTPException(refusal.status, refusal.detail, headers) from None
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                error = too_large(self.limit)
                raise HTTPException(error.status, error.detail, error.headers)
            return message

        await self.app(scope, admitted, send)
