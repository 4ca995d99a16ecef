"""Liveness, readiness and Prometheus metrics (no authentication: for orchestrators and scrapers)."""

from __future__ import annotations

import shutil

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from domain.problems import Problem
from storage import StorageError

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "a dependency is down (problem+json)"}})
def readyz(request: Request) -> dict[str, str]:
    state = request.app.state
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
    if down:
        raise Problem(503, "not ready: " + ", ".join(down) + " unavailable")
    return {"status": "ready"}


@router.get("/metrics", response_class=Response)
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)
