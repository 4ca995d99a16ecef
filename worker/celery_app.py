"""The Celery application of `mcu worker`: crash-safe delivery settings and the task names.

acks_late + reject_on_worker_lost: a message is acknowledged only after its task ran, so a worker that
dies mid-job leaves it to be redelivered; the visibility timeout exceeds the longest job so a live job is
never handed out twice; prefetch 1 keeps queued jobs available to idle workers. The reconciler (below)
covers what the broker cannot see: jobs whose worker stopped heartbeating, and messages the broker lost.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from functools import lru_cache

from celery import Celery
from kombu import Queue
from sqlalchemy import and_, or_, select

from models import DeletionRequest, make_engine, make_session_factory, utcnow
from settings import Settings
from storage import LocalCache, open_store
from worker import callbacks, pipeline
from worker.dispatch import (
    CLEANUP_REQUEST,
    CONTROL_QUEUE,
    DELIVER_CALLBACK,
    GPU_QUEUE,
    MATERIALIZE_SELECTION,
    RUN_REQUEST,
    Dispatcher,
    resend_stale_queued,
)

log = logging.getLogger(__name__)


def create_celery(settings: Settings) -> Celery:
    app = Celery("mcu", broker=settings.resolved_broker_url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue=GPU_QUEUE,
        task_queues=[Queue(GPU_QUEUE), Queue(CONTROL_QUEUE)],
        # Redis redelivers unacknowledged messages after the visibility timeout; the embedded SQL broker
        # takes no such option (its options go to SQLAlchemy's create_engine).
        broker_transport_options=({"visibility_timeout": settings.job_timeout_seconds}
                                  if settings.resolved_broker_url.startswith(("redis", "rediss")) else {}),
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )

    @lru_cache(maxsize=1)
    def services() -> pipeline.Services:
        factory = make_session_factory(make_engine(settings.resolved_database_url))
        store = open_store(settings.resolved_storage_url, s3_endpoint_url=settings.s3_endpoint_url)

        def notify(request_id: str, state: str) -> None:
            message_id = callbacks.new_message_id()
            if not callbacks.deliver(settings, factory, request_id, state, message_id, attempt=1):
                deliver_callback.apply_async((request_id, state, message_id, 2), countdown=2, queue=CONTROL_QUEUE)

        return pipeline.Services(settings, factory, store, LocalCache(settings.cache_dir, store), notify)

    @app.task(name=RUN_REQUEST)
    def run_request(request_id: str) -> None:
        pipeline.run_request(services(), request_id)

    @app.task(name=MATERIALIZE_SELECTION)
    def materialize_selection(request_id: str) -> None:
        pipeline.materialize_selection(services(), request_id)

    @app.task(name=CLEANUP_REQUEST)
    def cleanup_request(request_id: str) -> None:
        pipeline.cancelled_by_api(services(), request_id)

    @app.task(name=DELIVER_CALLBACK, bind=True)
    def deliver_callback(self, request_id: str, state: str, message_id: str, attempt: int) -> None:
        s = services()
        if callbacks.deliver(s.settings, s.factory, request_id, state, message_id, attempt):
            return
        if attempt < settings.callback_max_attempts:
            self.apply_async((request_id, state, message_id, attempt + 1), countdown=min(2**attempt, 600),
                             queue=CONTROL_QUEUE)

    app.mcu_services = services  # type: ignore[attr-defined]  (the reconciler shares them)
    return app


def reconcile(services: pipeline.Services, dispatcher: Dispatcher) -> dict[str, list[str]]:
    """Re-send what may be lost; resume jobs whose worker went silent; finish orphaned cancellations."""
    settings = services.settings
    now = utcnow()
    silent = now - timedelta(seconds=settings.heartbeat_timeout_seconds)
    unsent = now - timedelta(seconds=settings.requeue_after_seconds)
    done: dict[str, list[str]] = {"queued": resend_stale_queued(services.factory, dispatcher,
                                                                timedelta(seconds=settings.requeue_after_seconds))}
    with services.factory() as session:
        rows = session.execute(select(DeletionRequest.id, DeletionRequest.state).where(or_(
            and_(DeletionRequest.state.in_(("running", "materializing", "cancelling")),
                 DeletionRequest.heartbeat_at < silent),
            and_(DeletionRequest.state == "materializing", DeletionRequest.heartbeat_at.is_(None),
                 DeletionRequest.selected_at < unsent)))).all()
    for request_id, state in rows:
        if state == "cancelling":
            pipeline.cancel_finished(services, request_id)
        else:
            dispatcher.send(RUN_REQUEST if state == "running" else MATERIALIZE_SELECTION, request_id)
        done.setdefault(state, []).append(request_id)
    return done


def start_reconciler(app: Celery, settings: Settings) -> threading.Thread:
    """A daemon thread in every worker; duplicates across workers are harmless (tasks are idempotent)."""
    dispatcher = Dispatcher(settings.resolved_broker_url)

    def loop() -> None:
        while True:
            try:
                found = reconcile(app.mcu_services(), dispatcher)  # type: ignore[attr-defined]
                if any(found.values()):
                    log.info("reconciler: %s", found)
            except Exception:
                log.warning("reconciler round failed", exc_info=True)
            threading.Event().wait(settings.reconcile_interval_seconds)

    thread = threading.Thread(target=loop, name="mcu-reconciler", daemon=True)
    thread.start()
    return thread
