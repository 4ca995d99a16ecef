"""Liveness, readiness and Prometheus metrics, for orchestrators and scrapers: no API key (/metrics wants
`MCU_METRICS_TOKEN` when one is set). Readiness is checked by one probe at a time, and "ready" is reused
for READINESS_SECONDS (api.metrics.Shared), so a flood of probes cannot load the database, broker or store;
"not ready" is never reused, so a dependency that comes back is seen by the next probe."""

from __future__ import annotations

import hmac
import shutil
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from api.auth import bearer_token
from domain.problems import Problem
from storage import StorageError

router = APIRouter(tags=["health"])
READINESS_SECONDS = 1.0  # how long "ready" is reused


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def unavailable_dependencies(state: Any) -> list[str]:
    """What is down, each with a short reason; every check opens what it needs and closes it again."""
    down = []
    try:
        with state.read_session_factory() as session:
            session.execute(text("SELECT 1"))
    except Exception as error:  # noqa: BLE001  (any failure means "not ready")
        down.append(f"database ({type(error).__name__})")
    try:
        state.dispatcher.ping()
    except Exception as error:  # noqa: BLE001
        down.append(f"broker ({type(error).__name__})")
    try:
        state.store.ping()
    except StorageError as error:
        down.append(f"object store ({error})")
    settings = state.settings
    try:
        free = shutil.disk_usage(settings.data_dir).free
    except OSError as error:
        down.append(f"data directory {settings.data_dir} ({error.strerror})")
    else:
        if free < settings.min_free_bytes:
            down.append(f"data directory {settings.data_dir} ({free >> 20} MiB free, under MCU_MIN_FREE_BYTES)")
    return down


@router.get("/readyz", responses={503: {"description": "a dependency is down (problem+json)"}})
def readyz(request: Request) -> dict[str, str]:
    down = request.app.state.readiness.get()
    if down:
        raise Problem(503, "not ready: " + ", ".join(down) + " unavailable")
    return {"status": "ready"}


@router.get("/metrics", response_class=Response, responses={401: {"description": "MCU_METRICS_TOKEN not sent"}})
def metrics(request: Request) -> Response:
    token = request.app.state.settings.metrics_token
    if token and not hmac.compare_digest(
        (bearer_token(request.scope) or "").encode(), token.get_secret_value().encode()
    ):
        raise Problem(
            401, "/metrics wants 'Authorization: Bearer <MCU_METRICS_TOKEN>'", headers={"WWW-Authenticate": "Bearer"}
        )
    return Response(generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)
