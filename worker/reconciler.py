"""What the broker cannot see: queued requests and model validations whose task was lost, finished
requests whose clean-up was lost (artifacts, superseded weights, training rows), cached copies of erased
objects in this worker's cache, jobs whose worker went silent, cancellations nobody is left to finish,
requests that passed their due date, Fides privacy requests owed a resume (worker/fides.py), and attacks on a
curve point whose task was lost or whose worker went silent (worker/point_attacks.py); and, every
MCU_SWEEP_INTERVAL_SECONDS, crash leftovers (worker/sweeper.py). A daemon thread in every worker; duplicates
across workers are harmless (tasks are idempotent)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update

from domain.catalog import ModelState
from domain.lifecycle import WORKER_HELD, State, mark_dispatched, overdue_at, owe_callback
from domain.tasks import DELIVER_CALLBACK, MATERIALIZE_SELECTION, RUN_REQUEST, VALIDATE_MODEL
from models import Callback, DeletionRequest, Model, record_event, utcnow
from worker.callbacks import MAX_BACKOFF, OVERDUE
from worker.erasure import clean_up, prune_cache
from worker.fides import resume_owed
from worker.jobs import finish
from worker.point_attacks import resend_point_attacks
from worker.services import Services
from worker.sweeper import sweep

log = logging.getLogger(__name__)


def reconcile(services: Services) -> dict[str, list[str]]:
    """Re-send what may be lost; resume jobs whose worker went silent; finish orphaned cancellations."""
    settings = services.settings
    now = utcnow()
    silent = now - timedelta(seconds=settings.heartbeat_timeout_seconds)
    unsent = now - timedelta(seconds=settings.requeue_after_seconds)
    done: dict[str, list[str]] = {
        State.QUEUED: resend_queued(services, unsent),
        ModelState.VALIDATING: resend_validations(services, unsent),
        "artifacts_deleted": finish_cleanups(services, unsent),
        OVERDUE: notify_overdue(services),
        # A callback may sit in Celery's retry backoff (at most 600 s) before that.
        "callbacks": resend_callbacks(services, unsent - timedelta(seconds=MAX_BACKOFF)),
        "fides_resumes": resume_owed(services),  # privacy requests paused in Fides whose erasure ended
        "point_attacks": resend_point_attacks(services, unsent, silent),
    }
    if pruned := prune_cache(services):
        done["cache_pruned"] = [str(pruned)]
    with services.factory() as session:
        rows = session.execute(
            select(DeletionRequest.id, DeletionRequest.state).where(
                or_(
                    and_(DeletionRequest.state.in_(WORKER_HELD), DeletionRequest.heartbeat_at < silent),
                    and_(
                        DeletionRequest.state == State.MATERIALIZING,
                        DeletionRequest.heartbeat_at.is_(None),
                        DeletionRequest.selected_at < unsent,
                        DeletionRequest.job_id.is_(None),
                    ),
                )
            )
        ).all()
    for request_id, state in rows:
        if state == State.CANCELLING:
            finish(services, request_id, State.CANCELLED)  # its worker died: nobody is left to stop
        else:
            services.dispatcher.send(RUN_REQUEST if state == State.RUNNING else MATERIALIZE_SELECTION, request_id)
        done.setdefault(state, []).append(request_id)
    return done


def resend_queued(services: Services, sent_before: object) -> list[str]:
    """Queued requests never sent, or sent before `sent_before` and still not started."""
    with services.factory() as session:
        ids = session.scalars(
            select(DeletionRequest.id)
            .where(
                DeletionRequest.state == State.QUEUED,
                DeletionRequest.job_id.is_(None),  # members: their leader's
                or_(DeletionRequest.dispatched_at.is_(None), DeletionRequest.dispatched_at < sent_before),
            )
            .order_by(DeletionRequest.created_at)
        ).all()
    sent = [request_id for request_id in ids if services.dispatcher.send(RUN_REQUEST, request_id)]
    mark_dispatched(services.factory, sent)
    return sent


def resend_callbacks(services: Services, attempted_before: object) -> list[str]:
    """Callbacks owed but neither delivered nor abandoned, and not attempted since `attempted_before`: their
    task was lost (a broker outage, a worker that died holding a retry). Same message id: receivers dedupe."""
    with services.factory() as session:
        owed = session.execute(
            select(Callback.message_id, Callback.request_id, Callback.event).where(
                Callback.delivered_at.is_(None),
                Callback.abandoned_at.is_(None),
                Callback.attempted_at < attempted_before,
            )
        ).all()
    sent = [
        message_id
        for message_id, request_id, event in owed
        if services.dispatcher.send(DELIVER_CALLBACK, request_id, event, message_id)
    ]
    if sent:
        with services.factory() as session, session.begin():
            session.execute(update(Callback).where(Callback.message_id.in_(sent)).values(attempted_at=utcnow()))
    return sent


def notify_overdue(services: Services) -> list[str]:
    """Open requests past their due_at: an `overdue` event and callback, once per request."""
    now = utcnow()
    late = []
    with services.factory() as session, session.begin():
        # Claimed in one statement: a row another worker's reconciler marked first is not returned here.
        rows = session.execute(
            update(DeletionRequest)
            .where(overdue_at(now), DeletionRequest.overdue_notified_at.is_(None))
            .values(overdue_notified_at=now)
            .returning(DeletionRequest.id, DeletionRequest.state, DeletionRequest.due_at, DeletionRequest.callback_url)
        ).all()
        for request_id, state, due_at, callback_url in rows:
            record_event(session, request_id, OVERDUE, state, "reconciler", {"due_at": due_at.isoformat()})
            if callback_url:
                owe_callback(session, request_id, OVERDUE)
            late.append(request_id)
    return late


def finish_cleanups(services: Services, finished_before: object) -> list[str]:
    """Finished requests whose clean-up task never ran or did not finish (a broker outage, a crash): their
    forget-derived artifacts, superseded weights and training rows are deleted here, by the reconciler."""
    with services.factory() as session:
        ids = session.scalars(
            select(DeletionRequest.id)
            .where(
                DeletionRequest.state.in_((State.SUCCEEDED, State.CANCELLED)),
                or_(
                    DeletionRequest.artifacts_deleted_at.is_(None),  # or deleted only by a rebase, before finishing
                    DeletionRequest.artifacts_deleted_at < DeletionRequest.finished_at,
                    and_(DeletionRequest.state == State.SUCCEEDED, DeletionRequest.data_erased_at.is_(None)),
                ),
                DeletionRequest.finished_at < finished_before,
            )
            .order_by(DeletionRequest.finished_at)
        ).all()
    for request_id in ids:
        clean_up(services, request_id)
    return list(ids)


def resend_validations(services: Services, registered_before: datetime) -> list[str]:
    """Models still waiting for validation a while after registration (a message may be lost), their check sent
    again about once per MCU_REQUEUE_AFTER_SECONDS, not every round: a model whose measurement waits behind a
    long job would pile up a copy a round. The check hands a model that passes to the measurement again (a
    duplicate of one still queued does nothing once the first gives the verdict). The attempts are bounded
    where they start (worker/validation.py): a model whose validation never finishes ends `invalid` at its next
    delivery."""
    settings = services.settings
    period, interval, now = settings.requeue_after_seconds, settings.reconcile_interval_seconds, utcnow()
    with services.factory() as session:
        rows = session.execute(
            select(Model.id, Model.created_at).where(
                Model.state == ModelState.VALIDATING, Model.created_at < registered_before
            )
        ).all()
    # Due when a multiple of the period since registration passed since the previous round.
    due = [
        model_id
        for model_id, created_at in rows
        if (age := (now - created_at).total_seconds()) // period > (age - interval) // period
    ]
    return [model_id for model_id in due if services.dispatcher.send(VALIDATE_MODEL, model_id)]


@dataclass(frozen=True)
class RunningReconciler:
    thread: threading.Thread
    stopping: threading.Event

    def stop(self, timeout_seconds: float = 60) -> None:
        """End the rounds after the one under way (a test's, or a shutdown's, so no round outlives its caller)."""
        self.stopping.set()
        self.thread.join(timeout_seconds)


def start_reconciler(services: Callable[[], Services], interval_seconds: float) -> RunningReconciler:
    stopping = threading.Event()

    def loop() -> None:
        swept_at = -float("inf")  # listing the whole store is not for every round
        while not stopping.is_set():
            try:
                found = reconcile(services())
                if any(found.values()):
                    log.info("reconciler: %s", found)
                settings = services().settings
                if time.monotonic() - swept_at >= settings.sweep_interval_seconds:
                    sweep(services(), settings.orphan_grace_seconds)
                    swept_at = time.monotonic()
            except Exception:
                log.warning("reconciler round failed", exc_info=True)
            stopping.wait(interval_seconds)

    thread = threading.Thread(target=loop, name="mcu-reconciler", daemon=True)
    thread.start()
    return RunningReconciler(thread, stopping)
