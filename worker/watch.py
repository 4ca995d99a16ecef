"""Watching a running job: heartbeat thread, throttled progress writes, and the cancel check."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, cast

from sqlalchemy import select, update
from sqlalchemy.engine import CursorResult

import telemetry
from domain.lifecycle import State
from models import DeletionRequest, record_event, utcnow
from unlearning.training import Cancelled, JobHooks, Progress
from worker.services import Services, StopJob

log = logging.getLogger(__name__)
PROGRESS_EVERY_SECONDS = 1.0
CANCEL_POLL_SECONDS = 0.2


class JobWatch:
    """Heartbeat thread, throttled progress writes and the cancel check (between batches).

    A watcher thread reads the cancel flag every CANCEL_POLL_SECONDS and training only reads an Event:
    a database round trip per batch cost up to a third of a small job's time.
    """

    def __init__(self, services: Services, request_id: str, state: str) -> None:
        self.services, self.request_id, self.state = services, request_id, state
        self._stop = threading.Event()
        self._cancelled = threading.Event()
        self._last_write = 0.0
        self._phase: str | None = None
        self._first: tuple[float, float] | None = None  # (monotonic, overall) of the first planned report
        self._spans = telemetry.PhaseSpans()
        self._threads = [
            threading.Thread(target=telemetry.in_background(self._beat), daemon=True),
            threading.Thread(target=telemetry.in_background(self._watch_cancel), daemon=True),
        ]

    def __enter__(self) -> JobWatch:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, _: object, error: BaseException | None, __: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._spans.end(None if isinstance(error, Cancelled | StopJob) else error)  # a cancel is no failure

    def _beat(self) -> None:
        while not self._stop.wait(self.services.settings.heartbeat_interval_seconds):
            try:
                self._write({})
            except Exception:
                log.warning("heartbeat of %s failed", self.request_id, exc_info=True)

    def _write(self, values: dict[str, Any]) -> None:
        with self.services.factory() as session, session.begin():
            moved = cast(
                CursorResult[Any],
                session.execute(  # an UPDATE's result (typed as a plain Result)
                    update(DeletionRequest)
                    .where(DeletionRequest.id == self.request_id, DeletionRequest.state == self.state)
                    .values(heartbeat_at=utcnow(), **values)
                ),
            ).rowcount
            if not moved:
                raise StopJob(f"{self.request_id} is no longer {self.state}")
            if "progress" in values:  # a coalesced job's members show its progress too
                session.execute(
                    update(DeletionRequest)
                    .where(DeletionRequest.job_id == self.request_id, DeletionRequest.state == self.state)
                    .values(progress=values["progress"])
                )

    def on_progress(self, progress: Progress) -> None:
        now = time.monotonic()
        new_phase = progress.phase != self._phase
        if not new_phase and now - self._last_write < PROGRESS_EVERY_SECONDS and progress.fraction < 1.0:
            return
        self._last_write = now
        values = {
            "progress": {
                "phase": progress.phase,
                "fraction": round(progress.fraction, 4),
                "epoch": progress.epoch,
                "epochs": progress.epochs,
                "overall": progress.overall,
                "eta_seconds": self._eta(now, progress.overall),
            }
        }
        try:
            self._write(values)
        except StopJob:
            return  # the cancel check below ends the job
        if new_phase:
            self._phase = progress.phase
            self._spans.start(progress.phase)
            with self.services.factory() as session, session.begin():
                record_event(session, self.request_id, "phase_started", self.state, "worker", {"phase": progress.phase})

    def _eta(self, now: float, overall: float | None) -> float | None:
        """Seconds left at the rate this watch has seen (a resumed job starts part-way: its rate counts from
        here); None until 1% of the job is done."""
        if overall is None:
            return None
        if self._first is None:
            self._first = (now, overall)
        began, at = self._first
        if overall - at < 0.01:
            return None
        return round((now - began) * (1.0 - overall) / (overall - at), 1)

    def _watch_cancel(self) -> None:
        while not self._stop.wait(CANCEL_POLL_SECONDS):
            try:
                with self.services.factory() as session:
                    row = session.execute(
                        select(
                            DeletionRequest.cancel_requested, DeletionRequest.state, DeletionRequest.restart_requested
                        ).where(DeletionRequest.id == self.request_id)
                    ).one()
            except Exception:
                log.warning("cancel check of %s failed", self.request_id, exc_info=True)
                continue
            # A restart (a coalesced member left) stops training the same way; worker/jobs.py starts over.
            restart = row.restart_requested and self.state == State.RUNNING
            if row.cancel_requested or row.state != self.state or restart:
                self._cancelled.set()
                return

    def should_cancel(self) -> bool:
        return self._cancelled.is_set()

    def hooks(self) -> JobHooks:
        return JobHooks(on_progress=self.on_progress, should_cancel=self.should_cancel)
