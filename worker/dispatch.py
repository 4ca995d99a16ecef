"""Sending work to the broker by task name, and the reconciler that re-sends what may have been lost.

The API imports only this module of worker/: no torch, no task code. A request row is always committed
before its task is sent; if the broker is down the request simply stays `queued` and `resend_stale`
sends it later. Tasks are idempotent, so a duplicate delivery is harmless.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import Celery
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from models import DeletionRequest, utcnow

log = logging.getLogger(__name__)

GPU_QUEUE = "gpu"  # training and materialisation
CONTROL_QUEUE = "control"  # clean-up and callback retries
ALL_QUEUES = (GPU_QUEUE, CONTROL_QUEUE)
RUN_REQUEST = "mcu.run_request"
MATERIALIZE_SELECTION = "mcu.materialize_selection"
CLEANUP_REQUEST = "mcu.cleanup_request"
DELIVER_CALLBACK = "mcu.deliver_callback"
QUEUE_OF = {RUN_REQUEST: GPU_QUEUE, MATERIALIZE_SELECTION: GPU_QUEUE, CLEANUP_REQUEST: CONTROL_QUEUE,
            DELIVER_CALLBACK: CONTROL_QUEUE}


class Dispatcher:
    """A thin Celery producer: sends task names with a request id, never imports the tasks."""

    def __init__(self, broker_url: str) -> None:
        self.app = Celery("mcu-dispatch", broker=broker_url, set_as_current=False)
        options: dict[str, object] = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2}
        if broker_url.startswith(("redis://", "rediss://")):  # fail fast instead of hanging on a dead broker
            options |= {"socket_connect_timeout": 2, "socket_timeout": 5}
        self.app.conf.update(broker_connection_timeout=2, broker_connection_retry_on_startup=False,
                             broker_transport_options=options, task_default_queue=GPU_QUEUE)

    def send(self, task_name: str, request_id: str) -> bool:
        """True when the broker accepted the message; False (logged, never raised) when it is down."""
        try:
            self.app.send_task(task_name, args=[request_id], queue=QUEUE_OF[task_name], retry=False)
            return True
        except Exception as error:  # noqa: BLE001  (any broker failure leaves the row for the reconciler)
            log.warning("broker unavailable, %s for %s stays queued: %s", task_name, request_id,
                        type(error).__name__)
            return False

    def ping(self) -> None:
        with self.app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)

    def queue_depth(self) -> int | None:
        """Messages waiting in the gpu queue, where the transport can tell (Redis); else None."""
        try:
            with self.app.connection_for_read() as connection, connection.channel() as channel:
                return channel.queue_declare(GPU_QUEUE, passive=True).message_count
        except Exception:  # noqa: BLE001
            return None


def dispatch_run(factory: sessionmaker[Session], dispatcher: Dispatcher, request_id: str) -> bool:
    """Send the run task of a committed, queued request and note when it went out."""
    if not dispatcher.send(RUN_REQUEST, request_id):
        return False
    with factory() as session, session.begin():
        session.execute(update(DeletionRequest).where(DeletionRequest.id == request_id)
                        .values(dispatched_at=utcnow()))
    return True


def resend_stale_queued(factory: sessionmaker[Session], dispatcher: Dispatcher, older_than: timedelta) -> list[str]:
    """Re-send requests still `queued` that were never sent, or sent longer than `older_than` ago."""
    cutoff = utcnow() - older_than
    with factory() as session:
        ids = session.scalars(
            select(DeletionRequest.id)
            .where(DeletionRequest.state == "queued")
            .where(or_(DeletionRequest.dispatched_at.is_(None), DeletionRequest.dispatched_at < cutoff))
            .order_by(DeletionRequest.created_at)
        ).all()
    return [request_id for request_id in ids if dispatch_run(factory, dispatcher, request_id)]
