"""Sending work to the broker by task name.

The API imports only this module of worker/: no torch, no task code. Tasks go out after the transaction
that made them necessary commits (domain/lifecycle.py); if the broker is down the reconciler sends them
later. Tasks are idempotent, so a duplicate delivery is harmless.
"""

from __future__ import annotations

import logging

from celery import Celery
from opentelemetry.trace import SpanKind, StatusCode

import telemetry
from domain.tasks import GPU_QUEUE, QUEUE_OF, subject_of

log = logging.getLogger(__name__)


class Dispatcher:
    """A thin Celery producer: sends task names with a request id, never imports the tasks."""

    def __init__(self, broker_url: str) -> None:
        self.app = Celery("mcu-dispatch", broker=broker_url, set_as_current=False)
        options: dict[str, object] = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2}
        if broker_url.startswith(("redis://", "rediss://")):  # fail fast instead of hanging on a dead broker
            options |= {"socket_connect_timeout": 2, "socket_timeout": 5}
        self.app.conf.update(
            broker_connection_timeout=2,
            broker_connection_retry_on_startup=False,
            broker_transport_options=options,
            task_default_queue=GPU_QUEUE,
        )

    def send(self, task_name: str, *args: object, countdown: float | None = None) -> bool:
        """True when the broker accepted the message; False (logged, never raised) when it is down. The
        message's headers carry its subject (the request or model id, for the worker's log lines) and the
        trace context (telemetry/traces.py)."""
        subject = {subject_of(task_name): str(args[0])} if args else {}
        queue = QUEUE_OF[task_name]
        destination = {"messaging.destination.name": queue}
        with telemetry.span(f"send {task_name}", SpanKind.PRODUCER, **destination) as span, telemetry.bound(**subject):
            try:
                self.app.send_task(
                    task_name,
                    args=list(args),
                    queue=queue,
                    retry=False,
                    countdown=countdown,
                    headers=telemetry.task_headers(**subject),
                )
                return True
            except Exception as error:  # noqa: BLE001  (any broker failure leaves the row for the reconciler)
                span.set_status(StatusCode.ERROR, type(error).__name__)
                log.warning(
                    "broker unavailable, %s for %s not sent: %s",
                    task_name,
                    args[0] if args else "",
                    type(error).__name__,
                )
                return False

    def ping(self) -> None:
        with self.app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)

    def queue_depth(self) -> int | None:
        """Messages waiting in the gpu queue, where the transport can tell (Redis); else None. (The embedded
        broker's channel keeps a pooled connection after it is closed: scrapes exhausted that pool.)"""
        if not str(self.app.conf.broker_url).startswith(("redis://", "rediss://")):
            return None
        try:
            with self.app.connection_for_read() as connection, connection.channel() as channel:
                return channel.queue_declare(GPU_QUEUE, passive=True).message_count
        except Exception:  # noqa: BLE001
            return None
