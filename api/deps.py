"""Dependencies shared by the routes: database session, object store, settings, auth."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.auth import Principal, authenticate
from domain.problems import Problem
from settings import Settings
from storage import ObjectStore

READ_METHODS = ("GET", "HEAD")


# Trivial dependencies are async: a sync one costs a thread-pool hop on every request.
def get_session(request: Request) -> Iterator[Session]:
    factory = request.app.state.read_session_factory if request.method in READ_METHODS else \
        request.app.state.session_factory
    with factory() as session:
        yield session


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

    def check(request: Request, settings: SettingsDep,
              credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Principal:
        if credentials is None or not credentials.credentials:  # refused before touching the database
            raise Problem(401, "missing API key: send 'Authorization: Bearer <key>'",
                           headers={"WWW-Authenticate": "Bearer"})
        bootstrap = settings.bootstrap_api_key.get_secret_value() if settings.bootstrap_api_key else None
        with request.app.state.read_session_factory() as session:  # held for this one lookup, not the request
            principal = authenticate(session, credentials.credentials, bootstrap)
        if principal is None:
            raise Problem(401, "unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"})
        if scope is not None and not principal.allows(scope):
            raise Problem(403, f"this API key lacks the scope '{scope}'")
        return principal

    check.required_scope = scope or AUTHENTICATED  # type: ignore[attr-defined]  (read by the auth coverage test)
    return Depends(check)


def scope_of(dependency: Callable[..., Any]) -> str | None:
    return getattr(dependency, "required_scope", None)
