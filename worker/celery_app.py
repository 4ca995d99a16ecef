"""The Celery application of `mcu worker`: crash-safe delivery settings and the task names.

acks_late + reject_on_worker_lost: a message is acknowledged only after its task ran, so a worker that
dies mid-job leaves it to be redelivered; the visibility timeout exceeds the longest job so a live job is
never handed out twice; prefetch 1 keeps queued jobs available to idle workers. The reconciler (worker/reconciler.py)
covers what the broker cannot see: jobs whose worker stopped heartbeating, and messages the broker lost.
"""

from __future__ import annotations

from functools import lru_cache

from celery import Celery
from kombu import Queue

from settings import Settings
from worker import callbacks, erasure, jobs, validation
from worker.dispatch import (
    CLEANUP_REQUEST,
    CONTROL_QUEUE,
    DELIVER_CALLBACK,
    GPU_QUEUE,
    MATERIALIZE_SELECTION,
    RUN_REQUEST,
    VALIDATE_MODEL,
)
from worker.services import Services, connect


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
        broker_transport_options=(
            {"visibility_timeout": settings.job_timeout_seconds}
            if settings.resolved_broker_url.startswith(("redis", "rediss"))
            else {}
        ),
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )

    @lru_cache(maxsize=1)
    def services() -> Services:
        return connect(settings)

    @app.task(name=RUN_REQUEST)
    def run_request(request_id: str) -> None:
        jobs.run_request(services(), request_id)

    @app.task(name=MATERIALIZE_SELECTION)
    def materialize_selection(request_id: str) -> None:
        jobs.materialize_selection(services(), request_id)

    @app.task(name=VALIDATE_MODEL)
    def validate_model(model_id: str) -> None:
        validation.validate_model(services(), model_id)

    @app.task(name=CLEANUP_REQUEST)
    def cleanup_request(request_id: str) -> None:
        erasure.clean_up(services(), request_id)

    @app.task(name=DELIVER_CALLBACK, bind=True, max_retries=settings.callback_max_attempts - 1)
    def deliver_callback(self, request_id: str, event: str, message_id: str) -> None:
        """One attempt; on failure Celery retries it on the control queue after 2, 4, 8, ... s (at most 600)."""
        s, attempt = services(), self.request.retries + 1
        if not callbacks.deliver(s.settings, s.factory, request_id, event, message_id, attempt):
            raise self.retry(countdown=min(2**attempt, callbacks.MAX_BACKOFF), queue=CONTROL_QUEUE)

    app.mcu_services = services  # the reconciler shares them
    return app
