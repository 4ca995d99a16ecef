"""Authentication and scopes over every route of the app, found by walking the app itself.

The route table is read from `service.app.routes` and each route's scope from its dependency tree
(`api.deps.require` marks its checker with `required_scope`), so a route added without `require(...)`
fails `test_every_route_requires_a_scope` rather than going unnoticed.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from sqlalchemy import select, text, update

from api.auth import SCOPES, create_api_key
from api.deps import AUTHENTICATED, scope_of
from models import ApiKey, utcnow

from .conftest import Service, assert_problem

# Public by design: probes, docs, the console's static files (they carry no data), and the key that lets
# anyone holding a report verify it.
EXEMPT = {
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/redoc",
    "/docs/oauth2-redirect",
    "/console",
    "/console/static/{name}",
    "/v1/signing-key",
}
PATH_PARAM_VALUES = {"version": "1"}  # any other path parameter gets an id that exists nowhere


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # the template, e.g. /v1/models/{model_id}
    url: str  # a concrete URL for it
    scope: str | None

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def scopes_in(dependant: Dependant) -> set[str]:
    """Every `required_scope` in a route's dependency tree."""
    found = set()
    for dependency in dependant.dependencies:
        if dependency.call is not None and (scope := scope_of(dependency.call)) is not None:
            found.add(scope)
        found |= scopes_in(dependency)
    return found


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: PATH_PARAM_VALUES.get(m.group(1), "nonexistent-id"), path)


def flat_routes(app: object) -> list[Any]:
    """The app's routes with included routers expanded (FastAPI >= 0.16x nests them in `app.routes`); each
    item has the full `path`, `methods` and a `dependant` that includes router-level dependencies."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: app.routes is already flat
        return list(app.routes)  # type: ignore[attr-defined]
    return list(iter_route_contexts(app.routes))  # type: ignore[attr-defined]


def endpoints(app: object) -> tuple[list[Endpoint], list[str]]:
    """All (method, path) pairs of the app outside EXEMPT, and any non-exempt route FastAPI did not build."""
    found, unknown = [], []
    for route in flat_routes(app):
        path = getattr(route, "path", None) or repr(route)
        if path in EXEMPT:
            continue
        if not isinstance(getattr(route, "original_route", route), APIRoute):
            unknown.append(path)  # a mount or a plain Starlette route: no dependency tree to check
            continue
        scopes = scopes_in(route.dependant)
        assert len(scopes) <= 1, f"{path} checks several scopes: {scopes}"
        scope = next(iter(scopes), None)
        found += [Endpoint(method, path, concrete(path), scope) for method in sorted(route.methods)]
    return found, unknown


@pytest.fixture(scope="module")
def routes(service: Service) -> list[Endpoint]:
    found, _ = endpoints(service.app)
    assert len(found) >= 14, [str(e) for e in found]  # the route table is really being walked
    return found


@pytest.fixture(scope="module")
def keys(service: Service) -> dict[str, str]:
    """Secrets of keys made through `create_api_key`: one per scope ("only:<s>") and one per scope
    holding every other non-admin scope ("all-but:<s>")."""
    plain = [s for s in SCOPES if s != "admin"]
    wanted = {f"only:{s}": [s] for s in SCOPES} | {f"all-but:{s}": [o for o in plain if o != s] for s in plain}
    tag = secrets.token_hex(4)
    secrets_by_label = {}
    with service.app.state.session_factory() as session:  # type: ignore[attr-defined]
        for label, scopes in wanted.items():
            _, secret = create_api_key(session, f"auth-test-{tag}-{label}", scopes)
            secrets_by_label[label] = secret
        session.commit()
    return secrets_by_label


@pytest.fixture(scope="module")
def clients(service: Service, keys: dict[str, str]) -> Iterator[dict[str, httpx.Client]]:
    made = {label: service.with_key(secret) for label, secret in keys.items()}
    made["anonymous"] = service.anonymous()
    made["wrong"] = service.with_key("mcu_" + secrets.token_urlsafe(32))
    made["not-bearer"] = httpx.Client(base_url=service.url, headers={"Authorization": f"Basic {keys['only:admin']}"})
    yield made
    for client in made.values():
        client.close()


def test_every_route_requires_a_scope(service: Service) -> None:
    found, unknown = endpoints(service.app)
    assert not unknown, f"routes outside FastAPI's dependency system cannot be checked for auth: {unknown}"
    unscoped = [str(e) for e in found if e.scope is None]
    assert not unscoped, f"routes without require(scope): {unscoped}"
    assert {e.scope for e in found} <= {*SCOPES, AUTHENTICATED}
    assert {e.path for e in found if e.scope == AUTHENTICATED} == {"/v1/keys/me"}  # any valid key may ask


def test_openapi_operations_are_the_walked_routes(service: Service, routes: list[Endpoint]) -> None:
    """What /openapi.json advertises is exactly what the walk above checked, and each operation declares
    the bearer security scheme."""
    document = service.client.get("/openapi.json").json()
    advertised = {
        (method.upper(), path) for path, item in document["paths"].items() if path not in EXEMPT for method in item
    }
    assert advertised == {(e.method, e.path) for e in routes}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if path not in EXEMPT:
                assert operation.get("security"), f"{method.upper()} {path} declares no security"


def test_missing_or_wrong_key_is_401(routes: list[Endpoint], clients: dict[str, httpx.Client]) -> None:
    for endpoint in routes:
        for who in ("anonymous", "wrong", "not-bearer"):
            response = clients[who].request(endpoint.method, endpoint.url)
            body = assert_problem(response, 401)
            assert response.headers.get("www-authenticate") == "Bearer", (who, str(endpoint))
            assert "Traceback" not in body["detail"]


def test_key_without_the_scope_is_403(routes: list[Endpoint], clients: dict[str, httpx.Client]) -> None:
    """Every other non-admin scope together still does not open a route."""
    for endpoint in routes:
        assert endpoint.scope is not None and endpoint.scope != "admin"
        if endpoint.scope == AUTHENTICATED:
            continue
        response = clients[f"all-but:{endpoint.scope}"].request(endpoint.method, endpoint.url)
        assert_problem(response, 403, endpoint.scope)


def test_key_with_the_scope_passes_auth(routes: list[Endpoint], clients: dict[str, httpx.Client]) -> None:
    """With exactly the route's scope the request reaches the handler (404 for the made-up ids, 422 for
    a missing body, 200 for a list), never 401/403."""
    for endpoint in routes:
        scope = "requests:read" if endpoint.scope == AUTHENTICATED else endpoint.scope
        response = clients[f"only:{scope}"].request(endpoint.method, endpoint.url)
        assert response.status_code not in (401, 403), (str(endpoint), response.text)
        assert response.status_code < 500, (str(endpoint), response.text)


def test_scoped_key_reads_a_list(clients: dict[str, httpx.Client]) -> None:
    response = clients["only:models:read"].get("/v1/models")
    assert response.status_code == 200, response.text
    assert "items" in response.json()


def test_admin_scope_allows_everything(routes: list[Endpoint], clients: dict[str, httpx.Client]) -> None:
    for endpoint in routes:
        response = clients["only:admin"].request(endpoint.method, endpoint.url)
        assert response.status_code not in (401, 403), (str(endpoint), response.text)
        assert response.status_code < 500, (str(endpoint), response.text)


def test_bootstrap_key_has_every_scope(service: Service, routes: list[Endpoint]) -> None:
    assert service.client.get("/v1/models").status_code == 200
    assert service.client.get("/v1/deletion-requests").status_code == 200
    for endpoint in routes:
        response = service.client.request(endpoint.method, endpoint.url)
        assert response.status_code not in (401, 403), (str(endpoint), response.text)


def test_keys_are_stored_hashed(service: Service, keys: dict[str, str]) -> None:
    with service.app.state.session_factory() as session:  # type: ignore[attr-defined]
        rows = session.execute(text("SELECT * FROM api_keys")).all()
        assert len(rows) >= len(keys)
        dump = repr(rows)
        for secret in keys.values():
            assert secret not in dump
            assert secret[len("mcu_") :] not in dump
        hashes = set(session.scalars(select(ApiKey.key_hash)).all())
    assert {hashlib.sha256(s.encode()).hexdigest() for s in keys.values()} <= hashes


def test_revoked_key_is_401(service: Service) -> None:
    with service.app.state.session_factory() as session:  # type: ignore[attr-defined]
        row, secret = create_api_key(session, f"auth-test-revoked-{secrets.token_hex(4)}", ["models:read"])
        session.commit()
        with service.with_key(secret) as client:
            assert client.get("/v1/models").status_code == 200
            session.execute(update(ApiKey).where(ApiKey.id == row.id).values(revoked_at=utcnow()))
            session.commit()
            assert_problem(client.get("/v1/models"), 401, "unknown or revoked")


def test_keys_me_names_the_key_and_its_scopes(clients: dict[str, httpx.Client]) -> None:
    me = clients["only:requests:select"].get("/v1/keys/me")
    assert me.status_code == 200, me.text
    assert me.json()["name"].endswith("only:requests:select") and me.json()["scopes"] == ["requests:select"]
    assert set(me.json()) == {"name", "scopes"}  # never the secret or its hash
