"""A job's grid shared with the queue's other workers (MCU_GRID_FANOUT; docs/scaling.md).

The job's own worker (the owner) writes each pass of the grid (unlearning/spectrum.py `coarse_to_fine`) as
`grid_points` rows, sends one MEASURE_GRID task per point beyond one, and measures too: every process claims one
queued point at a time, so a busy queue never holds the job up — with no other worker free, the owner measures
them all, and the helpers' tasks find nothing left when they run. A helper rebuilds the curve from the stored
θ_o, θ_p and θ_c and measures on the same seeded rows (unlearning/pipeline.py `measure_points`), so the merged
pass equals one measured in a single process. Rows carry the θ_c they belong to: a helper holding another
curve (the job restarted meanwhile) claims nothing. A point claimed longer ago than MCU_HEARTBEAT_TIMEOUT_SECONDS
(its helper died) is queued again; a helper that fails gives its point back and stops.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any, cast

from safetensors.torch import load as load_tensors
from sqlalchemy import CursorResult, delete, select, update

from domain.lifecycle import State
from domain.tasks import MEASURE_GRID
from models import DeletionRequest, GridPoint, utcnow
from unlearning.curve import StateDict
from unlearning.metrics import PointMetrics
from unlearning.pipeline import measure_points
from unlearning.training import JobHooks
from worker import artifacts
from worker.inputs import load_inputs
from worker.services import Services

log = logging.getLogger(__name__)

WAIT_SECONDS = 0.2  # how often the owner looks at points other workers hold


class WorkerGridFanout:
    """The owner's side (unlearning/pipeline.py `GridFanout`); `measured_by` counts the points per worker."""

    def __init__(self, services: Services, request_id: str, hooks: JobHooks) -> None:
        self.services, self.request_id, self.hooks = services, request_id, hooks
        self.measured_by: Counter[str] = Counter()
        self._curve: str | None = None  # the sha256 of the stored θ_c

    def measure(
        self, ts: list[float], control: StateDict, measure_here: Callable[[float], PointMetrics | None]
    ) -> dict[float, PointMetrics | None]:
        if self._curve is None:  # the helpers' copy of θ_c, stored once the curve is trained
            blob = artifacts.tensor_bytes(control)
            artifacts.save(self.services, self.request_id, artifacts.THETA_C, blob)
            self._curve = hashlib.sha256(blob).hexdigest()
        with self.services.factory() as session, session.begin():
            session.execute(delete(GridPoint).where(GridPoint.request_id == self.request_id))
            session.add_all(
                GridPoint(request_id=self.request_id, t=t, curve_sha256=self._curve, state=State.QUEUED) for t in ts
            )
        for _ in ts[1:]:
            self.services.dispatcher.send(MEASURE_GRID, self.request_id)
        try:
            rows = self._measure_and_wait(measure_here)
        finally:
            with self.services.factory() as session, session.begin():
                session.execute(delete(GridPoint).where(GridPoint.request_id == self.request_id))
        self.measured_by.update(row.measured_by or "" for row in rows)
        return {row.t: PointMetrics(**row.metrics) if row.metrics is not None else None for row in rows}

    def _measure_and_wait(self, measure_here: Callable[[float], PointMetrics | None]) -> list[GridPoint]:
        while True:
            self.hooks.check_cancel()
            if (claim := claim_point(self.services, self.request_id, self._curve)) is not None:
                t, claimed_at = claim
                store_point(self.services, self.request_id, t, claimed_at, measure_here(t))
                continue
            with self.services.factory() as session:
                rows = list(session.scalars(select(GridPoint).where(GridPoint.request_id == self.request_id)))
                session.expunge_all()
            if all(row.state in (State.SUCCEEDED, State.FAILED) for row in rows):
                return rows
            requeue_silent(self.services, self.request_id)
            time.sleep(WAIT_SECONDS)


def measure_grid(services: Services, request_id: str) -> int:
    """A helper's share of a running job's pass: queued points until none is left. Returns how many."""
    with services.factory() as session:
        curve = session.scalar(
            select(GridPoint.curve_sha256).where(GridPoint.request_id == request_id, GridPoint.state == State.QUEUED)
        )
        request = session.get(DeletionRequest, request_id)
        if curve is None or request is None or request.state != State.RUNNING:
            return 0  # merged already, or the job ended: nothing to load
        session.expunge(request)
    inputs = load_inputs(services, request)
    theta_c = services.store.get_bytes(artifacts.artifact_key(request_id, artifacts.THETA_C))
    if hashlib.sha256(theta_c).hexdigest() != curve:
        return 0  # stored for another pass's curve: the job restarted; its rows will name the new one
    theta_p = services.store.get_bytes(artifacts.artifact_key(request_id, artifacts.THETA_P))
    tensors = {"theta_o": inputs.model.state_dict(), "theta_p": load_tensors(theta_p), "theta_c": load_tensors(theta_c)}
    meter = measure_points(
        inputs.model, inputs.data, tensors, request.config, request.base_method, device=services.settings.device
    )
    done = 0
    while (claim := claim_point(services, request_id, curve)) is not None:
        t, claimed_at = claim
        try:
            metrics = meter(t)
        except Exception:
            log.warning("grid point t=%s of %s failed here; its owner measures it", t, request_id, exc_info=True)
            _release(services, request_id, t, claimed_at)
            return done
        store_point(services, request_id, t, claimed_at, metrics if metrics.is_finite() else None)
        done += 1
    return done


def claim_point(services: Services, request_id: str, curve: str | None) -> tuple[float, Any] | None:
    """One queued point of this curve, now held by this worker: (t, the claim's time), or None."""
    with services.factory() as session, session.begin():
        t = session.scalar(
            select(GridPoint.t)
            .where(GridPoint.request_id == request_id, GridPoint.curve_sha256 == curve, GridPoint.state == State.QUEUED)
            .order_by(GridPoint.t)
            .limit(1)
        )
        if t is None:
            return None
        claimed_at = utcnow()
        taken = session.execute(
            update(GridPoint)
            .where(GridPoint.request_id == request_id, GridPoint.t == t, GridPoint.state == State.QUEUED)
            .values(state=State.RUNNING, claimed_at=claimed_at, measured_by=services.worker_name)
        )
        if cast(CursorResult[Any], taken).rowcount != 1:  # another worker took it first: try the next one
            return claim_point(services, request_id, curve)
        return t, claimed_at


def store_point(services: Services, request_id: str, t: float, claimed_at: Any, metrics: PointMetrics | None) -> None:
    """The point's metrics (None: rejected, non-finite), if this claim still holds it."""
    with services.factory() as session, session.begin():
        session.execute(
            update(GridPoint)
            .where(*_held(request_id, t, claimed_at, services.worker_name))
            .values(
                state=State.SUCCEEDED if metrics is not None else State.FAILED,
                metrics=metrics.to_dict() if metrics is not None else None,
            )
        )


def requeue_silent(services: Services, request_id: str) -> None:
    """Points claimed longer ago than the heartbeat timeout: their worker died (or is far too slow)."""
    silent = utcnow() - timedelta(seconds=services.settings.heartbeat_timeout_seconds)
    with services.factory() as session, session.begin():
        session.execute(
            update(GridPoint)
            .where(GridPoint.request_id == request_id, GridPoint.state == State.RUNNING, GridPoint.claimed_at < silent)
            .values(state=State.QUEUED, claimed_at=None, measured_by=None)
        )


def _release(services: Services, request_id: str, t: float, claimed_at: Any) -> None:
    with services.factory() as session, session.begin():
        session.execute(
            update(GridPoint)
            .where(*_held(request_id, t, claimed_at, services.worker_name))
            .values(state=State.QUEUED, claimed_at=None, measured_by=None)
        )


def _held(request_id: str, t: float, claimed_at: Any, worker: str) -> tuple[Any, ...]:
    return (
        GridPoint.request_id == request_id,
        GridPoint.t == t,
        GridPoint.state == State.RUNNING,
        GridPoint.claimed_at == claimed_at,
        GridPoint.measured_by == worker,
    )
