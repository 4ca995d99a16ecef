"""The FastAPI application: `create_app(settings)` wires database, object store and broker."""

from __future__ import annotations

import logging
import tempfile
from functools import partial
from pathlib import Path

from anyio import CapacityLimiter
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

import telemetry
from api.admission import Admission
from api.errors import install_error_handlers
from api.metrics import MetricsMiddleware, ServiceCollector, Shared
from api.multipart import MultipartCompleteness
from api.openapi import install_openapi
from api.ratelimit import RateLimitMiddleware
from api.routes import console, datasets, deletion_requests, erasures, health, integrations, meta, models, signing
from domain.approval import require_everywhere
from domain.lifecycle import send_follow_ups_after_commit
from domain.signing import SigningKeys
from migrations.runner import upgrade
from models import make_engine, make_session_factory
from settings import Settings, get_settings
from storage import open_store, sweep_scratch_files
from worker.dispatch import Dispatcher

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # uploads are spooled there
    # What a killed API left mid-upload: spools next to the embedded store, and S3 uploads' in the temp dir.
    sweep_scratch_files(settings.data_dir)
    sweep_scratch_files(Path(tempfile.gettempdir()), recursive=False)
    if settings.is_embedded:  # the embedded default creates its schema on first start
        upgrade(settings.resolved_database_url)
    app = FastAPI(
        title="MCU unlearning service",
        version="1.0.0",
        description="Deletion requests in, unlearned model versions out (masked Mode Connectivity "
        "Unlearning). The contract: docs/api.md.",
    )
    engine = make_engine(settings.resolved_database_url)
    app.state.settings = settings
    app.state.session_factory = make_session_factory(engine)
    require_everywhere(app.state.session_factory, settings.require_approval)  # MCU_REQUIRE_APPROVAL
    # Reads (GETs and authentication) never wait behind the embedded database's write lock.
    app.state.read_session_factory = (
        make_session_factory(make_engine(settings.resolved_database_url, read_only=True))
        if settings.is_embedded
        else app.state.session_factory
    )
    app.state.db_limiter = CapacityLimiter(settings.api_db_threads)  # the routes' database threads (api/deps.py)
    app.state.store = open_store(settings.resolved_storage_url, s3_endpoint_url=settings.s3_endpoint_url)
    app.state.dispatcher = Dispatcher(settings.resolved_broker_url)
    send_follow_ups_after_commit(app.state.session_factory, app.state.dispatcher)
    app.state.signing_keys = SigningKeys(app.state.session_factory, settings, app.state.read_session_factory)
    app.state.metrics_registry = registry = CollectorRegistry()
    registry.register(ServiceCollector(app.state.read_session_factory, app.state.dispatcher))
    # Readiness: "ready" is reused for a second; "not ready" never, so a recovery is seen by the next probe.
    app.state.readiness = Shared(
        partial(health.unavailable_dependencies, app.state),
        health.READINESS_SECONDS,
        initial=["readiness (not checked yet)"],
        reusable=lambda down: not down,
    )
    app.add_middleware(MultipartCompleteness)
    app.add_middleware(Admission, max_request_bytes=settings.max_request_bytes)  # the caller, before the body
    app.add_middleware(
        RateLimitMiddleware,
        per_address=settings.rate_limit_per_address,
        per_key=settings.rate_limit_per_key,
        storage_url=settings.resolved_rate_limit_storage_url,
    )
    telemetry.instrument_app(app)  # server spans; the path's request or model id bound for its log lines
    app.add_middleware(MetricsMiddleware, registry=registry)  # added last, so outermost: it counts 429s too
    install_error_handlers(app)
    install_openapi(app)
    for router in (health.router, datasets.router, models.router, deletion_requests.router, signing.router):
        app.include_router(router)
    app.include_router(console.router)
    app.include_router(meta.router)
    app.include_router(erasures.router)
    app.include_router(integrations.router)
    return app
