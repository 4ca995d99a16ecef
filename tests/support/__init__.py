"""What tests share: waiting (through the client's one polling loop, `mcu_client.wait_for`), free ports, a
throw-away Postgres schema.

The digits dataset and model every flow test uploads come from `cli.digits` (the demo uploads the same).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from collections.abc import Iterator
from typing import Any

import httpx

from mcu_client import Client, wait_for

__all__ = ["free_port", "postgres_schema", "redis_db", "redis_url", "wait_for", "wait_for_state", "wait_model"]

POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
# The auditor's attacks on a published version at a test's size (the defaults cost seconds per publication);
# tests/worker/test_evidence.py and tests/unlearning/test_attacks.py check them at full budget.
QUICK_EVIDENCE = {"relearn_steps": 8, "relearn_retain_rows": 200, "eval_rows": 200}


# `make test` runs the suite in two pytest-xdist processes (gw0, gw1; PYTEST_XDIST_WORKER): each flushes and
# uses Redis databases of its own, so neither sees the other's queues. Redis has 16: process k takes 1 + 8k
# onwards, and databases 0 and 8 (a developer's defaults) are never touched. "own-stack" serves the e2e modules whose
# stack has settings of its own: each stack is module-scoped and flushes it on start, and a module runs whole in one
# process (`--dist loadfile`), so no two of them use it at once.
REDIS_DATABASES = ("api", "e2e", "own-stack", "rate-limits", "domain", "queue-metrics", "fides")


def redis_db(use: str) -> int:
    """This test process's Redis database for `use` (one of REDIS_DATABASES)."""
    process = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    if process > 1:
        raise RuntimeError("Redis has 16 databases, enough for two test processes: run pytest with -n 2 at most")
    return 1 + 8 * process + REDIS_DATABASES.index(use)


def redis_url(use: str) -> str:
    return f"redis://127.0.0.1:6379/{redis_db(use)}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_state(
    client: httpx.Client, request_id: str, states: tuple[str, ...], timeout: float = 120
) -> dict[str, Any]:
    """The request's body (JSON) once its state is one of `states`: the client's `wait`, which raises at once
    when the request ends in another state."""
    return Client(http=client).wait(request_id, until=states, timeout=timeout, interval=0.1).model_dump(mode="json")


def wait_model(client: httpx.Client, model_id: str, timeout: float = 60) -> dict[str, Any]:
    """The model (JSON) once a worker validated it; fails when it is invalid."""
    return Client(http=client).wait_model(model_id, timeout=timeout).model_dump(mode="json")


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
