"""Dependencies shared by the routes: database session, object store, settings, auth.

A route's session holds a pooled connection only while the route runs: `SessionRoute` closes it in the
route's own thread as soon as the route returns or raises, before the answer is serialised and sent (as
slow as the client). A connection held past that, while every thread waits for one, deadlocked the pool
under load and answered 503s (issue 29). The same thread then validates and renders the answer to JSON, so
FastAPI's second thread-pool hop (its validation of a sync route's result) is not taken either.

That thread comes from the app's `db_limiter` (`MCU_API_DB_THREADS`, default 4), not AnyIO's pool of 40: the
work is CPU under the GIL, and 40 threads contending for it doubled the CPU a request cost under load (issue
29). A route that takes the object store (uploads, downloads) may wait on a transfer of any length, so it keeps
AnyIO's pool and does not hold up the others.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Annotated, Any

from anyio import CapacityLimiter, to_thread
from fastapi import Depends, Request, Response
from fastapi.exceptions import ResponseValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic_core import PydanticSerializationError
from sqlalchemy.orm import Session

from api.auth import PRINCIPAL, Principal, authorize
from domain.inputs import servable
from settings import Settings
from storage import ObjectStore

READ_METHODS = ("GET", "HEAD")
LIMITER = "mcu.limiter"  # where a route's session carries the limiter its thread is taken from


# Trivial dependencies are async: a sync one costs a thread-pool hop on every request.
async def get_session(request: Request) -> AsyncIterator[Session]:
    """The route's session: no connection until its first statement, and SessionRoute closes it in the route's
    thread, so making it and closing it again here do no I/O on the event loop."""
    factory = (
        request.app.state.read_session_factory if request.method in READ_METHODS else request.app.state.session_factory
    )
    with factory() as session:
        session.info[LIMITER] = request.app.state.db_limiter
        yield session


class SessionRoute(APIRoute):
    """The route class of every router whose routes take a SessionDep (see the module's docstring). What a
    route returns must be loaded by then: serialising a detached row's unloaded attribute fails loudly
    instead of taking a connection behind the route's back."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, _closing_sessions(endpoint, self), **kwargs)

    def render(self, result: Any, arguments: dict[str, Any]) -> Any:
        """`result` validated against the response model and rendered as FastAPI would (status and headers a
        route set on its `response` parameter included), in the calling thread."""
        if self.response_field is None or isinstance(result, Response):
            return result
        value, errors = self.response_field.validate(result, {}, loc=("response",))
        if errors:
            raise ResponseValidationError(errors, body=result)
        given = next((v for v in arguments.values() if isinstance(v, Response)), None)
        status = (given.status_code if given is not None else None) or self.status_code or 200
        response = Response(_json(self.response_field, value), status, media_type="application/json")
        if given is not None:
            response.headers.raw.extend(given.headers.raw)
        return response


def _json(field: Any, value: Any) -> bytes:
    """Pydantic's JSON in one pass; a row stored before the input checks (a lone surrogate in its text) must not
    500 every list: only then is the body walked, once, with each one replaced by U+FFFD."""
    try:
        return field.serialize_json(value)
    except PydanticSerializationError:
        return json.dumps(
            servable(field.serialize(value, mode="json")), ensure_ascii=False, separators=(",", ":")
        ).encode()


def _closing_sessions(endpoint: Callable[..., Any], route: SessionRoute) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(endpoint):  # a coroutine must not run SQL on the event loop anyway
        return endpoint

    def run_and_render(arguments: dict[str, Any]) -> Any:
        try:
            result = endpoint(**arguments)
        finally:
            for value in arguments.values():
                if isinstance(value, Session):
                    value.close()  # the connection goes back to the pool here, in this thread
        return route.render(result, arguments)

    @functools.wraps(endpoint)  # FastAPI reads the parameters through __wrapped__, and calls with keywords
    async def run(**arguments: Any) -> Any:
        return await to_thread.run_sync(run_and_render, arguments, limiter=_limiter(arguments.values()))

    return run


def _limiter(arguments: Iterable[Any]) -> CapacityLimiter | None:
    """The database threads' limiter, unless the route moves objects (None: AnyIO's default pool)."""
    values = list(arguments)
    if any(isinstance(value, ObjectStore) for value in values):
        return None
    return next((value.info[LIMITER] for value in values if isinstance(value, Session)), None)


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


async def get_store(request: Request) -> ObjectStore:
    return request.app.state.store


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
StoreDep = Annotated[ObjectStore, Depends(get_store)]

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer <key>`")


AUTHENTICATED = "(any valid key)"  # the `required_scope` of require(None): authentication alone


def require(scope: str | None) -> Any:
    """A dependency that authenticates the caller and checks one scope (401 / 403 otherwise); `None` checks
    authentication only."""

    async def check(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> Principal:
        if PRINCIPAL in request.scope:  # authorized already, before the body was read (api/admission.py)
            return request.scope[PRINCIPAL]
        state = request.app.state
        secret = credentials.credentials if credentials else None
        return await to_thread.run_sync(authorize, state, secret, scope, limiter=state.db_limiter)

    check.required_scope = scope or AUTHENTICATED  # type: ignore[attr-defined]  # read by the auth coverage test
    return Depends(check)


def scope_of(dependency: Callable[..., Any]) -> str | None:
    return getattr(dependency, "required_scope", None)
