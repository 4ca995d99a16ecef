"""Dependencies shared by the routes: database session, object store, settings, auth."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.auth import PRINCIPAL, Principal, authorize
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

    def check(request: Request,
              credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Principal:
        if PRINCIPAL in request.scope:  # authorized already, before the body was read (api/admission.py)
            return request.scope[PRINCIPAL]
        return authorize(request.app.state, credentials.credentials if credentials else None, scope)

    check.required_scope = scope or AUTHENTICATED  # type: ignore[attr-defined]  (read by the auth coverage test)
    return Depends(check)


def scope_of(dependency: Callable[..., Any]) -> str | None:
    return getattr(dependency, "required_scope", None)
