"""The Celery application of `mcu worker`: crash-safe delivery settings, the tasks under their names
(domain/tasks.py), and each task's log fields (telemetry/).

acks_late + reject_on_worker_lost: a message is acknowledged only after its task ran, so a worker that
dies mid-job leaves it to be redelivered; the visibility timeout exceeds the longest job so a live job is
never handed out twice; prefetch 1 keeps queued jobs available to idle workers. The reconciler (worker/reconciler.py)
covers what the broker cannot see: jobs whose worker stopped heartbeating, and messages the broker lost.
"""

from __future__ import annotations

from functools import lru_cache

from celery import Celery, Task, signals
from kombu import Queue

import telemetry
from domain.tasks import (
    ATTACK_POINT,
    CLEANUP_REQUEST,
    CONTROL_QUEUE,
    DELIVER_CALLBACK,
    GPU_QUEUE,
    MATERIALIZE_SELECTION,
    MEASURE_GRID,
    MEASURE_MODEL,
    RUN_REQUEST,
    VALIDATE_MODEL,
)
from settings import Settings
from worker import callbacks, erasure, grid, jobs, point_attacks, validation
from worker.allocator import release_free_memory
from worker.services import Services, connect


@signals.setup_logging.connect
def _keep_our_logging(**_: object) -> None:
    """`mcu worker` configured logging (telemetry.configure): with a receiver here Celery adds no handler of its
    own and leaves stdout alone; its loggers (" ready.", "Task ... succeeded") propagate to ours."""


@signals.task_prerun.connect
def _bind_task_subject(task: Task, **_: object) -> None:
    telemetry.bind_from_headers(task.request)  # every line of the task carries its request (or model) id


@signals.task_postrun.connect
def _after_task(**_: object) -> None:
    telemetry.clear()
    release_free_memory()  # what the task freed goes back to the kernel (worker/allocator.py)


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

    @app.task(name=MEASURE_GRID)
    def measure_grid(request_id: str) -> None:
        grid.measure_grid(services(), request_id)

    @app.task(name=ATTACK_POINT)
    def attack_point(request_id: str, t: float) -> None:
        point_attacks.attack_point(services(), request_id, t)

    @app.task(name=VALIDATE_MODEL)
    def validate_model(model_id: str) -> None:
        validation.check_model(services(), model_id)  # the check; it sends MEASURE_MODEL when the model passes

    @app.task(name=MEASURE_MODEL)
    def measure_model(model_id: str) -> None:
        validation.measure_model(services(), model_id)

    @app.task(name=CLEANUP_REQUEST)
    def cleanup_request(request_id: str) -> None:
        erasure.clean_up(services(), request_id)

    @app.task(name=DELIVER_CALLBACK, bind=True, max_retries=None)  # the outbox counts the attempts
    def deliver_callback(self, request_id: str, event: str, message_id: str) -> None:
        """One attempt; on failure Celery retries it on the control queue after 2, 4, 8, ... s (at most 600),
        until the outbox's count reaches MCU_CALLBACK_MAX_ATTEMPTS."""
        s = services()
        done, attempt = callbacks.deliver(s.settings, s.factory, request_id, event, message_id)
        if not done:
            raise self.retry(countdown=min(2**attempt, callbacks.MAX_BACKOFF), queue=CONTROL_QUEUE)

    app.mcu_services = services  # the reconciler shares them
    return app
