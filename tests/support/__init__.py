"""What tests share: waiting for a condition or a request's state, free ports, a throw-away Postgres schema.

The digits dataset and model every flow test uploads come from `cli.digits` (the demo uploads the same).
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> Any:
    """The first truthy value of `condition()`; TimeoutError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def wait_for_state(client: httpx.Client, request_id: str, states: tuple[str, ...], timeout: float = 120
                   ) -> dict[str, Any]:
    """The request's body once its state is one of `states`; fails at once on an unexpected `failed`."""

    def reached() -> dict[str, Any] | None:
        body = client.get(f"/v1/deletion-requests/{request_id}").json()
        if body["state"] == "failed" and "failed" not in states:
            raise AssertionError(f"request failed: {body['error']}")
        return body if body["state"] in states else None

    return wait_for(reached, timeout, f"{request_id} to reach {states}", interval=0.1)


@contextlib.contextmanager
def postgres_schema(prefix: str) -> Iterator[str]:
    """A fresh schema in database `test`, dropped afterwards; yields a URL whose search_path is that schema."""
    from sqlalchemy import create_engine, text

    schema = f"{prefix}_{secrets.token_hex(4)}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{POSTGRES_ADMIN_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
