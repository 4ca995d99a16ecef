"""A job's grid shared with the queue's other workers (MCU_GRID_FANOUT; docs/scaling.md).

The job's own worker (the owner) writes each pass of the grid (unlearning/spectrum.py `coarse_to_fine`) as
`grid_points` rows, sends one MEASURE_GRID task per row beyond one, and measures too: every process claims one
queued row at a time, so a busy queue never holds the job up — with no other worker free, the owner measures
them all, and the helpers' tasks find nothing left when they run. The recommended point, measured on every row,
is then shared the same way in as many parts as workers measured the last pass (one: the owner measures it alone,
without rows): each part counts a slice of the rows (unlearning/metrics.py `EvalSets.share`) and the owner adds
the counts. A helper rebuilds the curve from the stored θ_o, θ_p and θ_c and measures on the same seeded rows
(unlearning/pipeline.py `PointMeter`), so the merged pass equals one measured in a single process. Rows carry the
θ_c they belong to: a helper holding another curve (the job restarted meanwhile) claims nothing. A row claimed
longer ago than MCU_HEARTBEAT_TIMEOUT_SECONDS (its helper died) is queued again; a helper that fails gives its
row back and stops; one with nothing left to claim waits `LINGER_SECONDS` for the job's next pass before it returns.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any, NamedTuple, cast

from safetensors.torch import load as load_tensors
from sqlalchemy import CursorResult, delete, select, update

from domain.lifecycle import State
from domain.tasks import MEASURE_GRID
from models import DeletionRequest, GridPoint, utcnow
from unlearning.curve import StateDict
from unlearning.metrics import PointCounts, PointMetrics
from unlearning.pipeline import PointMeter
from unlearning.training import JobHooks
from worker import artifacts
from worker.inputs import load_inputs
from worker.services import Services

log = logging.getLogger(__name__)

WAIT_SECONDS = 0.2  # how often the owner looks at rows other workers hold
# How long a helper with nothing left to claim waits for the job's next pass (the next grid pass or the recommended
# point's parts follow within milliseconds): it measures them without loading the job's inputs again.
LINGER_SECONDS = 2.0


class Unit(NamedTuple):
    """One row of a pass: a grid point (parts 0) or part `part` of `parts` of a point measured on every row."""

    t: float
    part: int = 0
    parts: int = 0


MeasureUnit = Callable[[Unit], dict[str, Any] | None]  # what a row stores: metrics or counts (None: rejected)


class WorkerGridFanout:
    """The owner's side (unlearning/pipeline.py `GridFanout`); `measured_by` counts the grid points per worker and
    `parts_by` the parts of full-set points."""

    def __init__(self, services: Services, request_id: str, hooks: JobHooks) -> None:
        self.services, self.request_id, self.hooks = services, request_id, hooks
        self.measured_by: Counter[str] = Counter()
        self.parts_by: Counter[str] = Counter()
        self._workers = 1  # how many measured the last pass of the grid
        self._curve: str | None = None  # the sha256 of the stored θ_c

    def measure(
        self, ts: list[float], control: StateDict, measure_here: Callable[[float], PointMetrics | None]
    ) -> dict[float, PointMetrics | None]:
        def here(unit: Unit) -> dict[str, Any] | None:
            metrics = measure_here(unit.t)
            return metrics.to_dict() if metrics is not None else None

        rows = self._pass([Unit(t) for t in ts], control, here)
        self.measured_by.update(row.measured_by or "" for row in rows)
        self._workers = len({row.measured_by for row in rows})
        return {row.t: PointMetrics(**row.metrics) if row.metrics is not None else None for row in rows}

    def measure_full(self, t: float, control: StateDict, count_here: Callable[[int, int], PointCounts]) -> PointCounts:
        if self._workers == 1:  # nobody helped with the grid: no rows to share it through
            return count_here(0, 1)
        rows = self._pass(
            [Unit(t, part, self._workers) for part in range(self._workers)],
            control,
            lambda unit: count_here(unit.part, unit.parts).to_dict(),
        )
        self.parts_by.update(row.measured_by or "" for row in rows)
        counts = [PointCounts(**cast(dict[str, Any], row.metrics)) for row in sorted(rows, key=lambda row: row.part)]
        return sum(counts[1:], counts[0])

    def _pass(self, units: list[Unit], control: StateDict, measure_here: MeasureUnit) -> list[GridPoint]:
        if self._curve is None:  # the helpers' copy of θ_c, stored once the curve is trained
            blob = artifacts.tensor_bytes(control)
            artifacts.save(self.services, self.request_id, artifacts.THETA_C, blob)
            self._curve = hashlib.sha256(blob).hexdigest()
        with self.services.factory() as session, session.begin():
            session.execute(delete(GridPoint).where(GridPoint.request_id == self.request_id))
            session.add_all(
                GridPoint(request_id=self.request_id, t=u.t, part=u.part, parts=u.parts, curve_sha256=self._curve,
                          state=State.QUEUED)
                for u in units
            )  # fmt: skip
        for _ in units[1:]:
            self.services.dispatcher.send(MEASURE_GRID, self.request_id)
        try:
            return self._measure_and_wait(measure_here)
        finally:
            with self.services.factory() as session, session.begin():
                session.execute(delete(GridPoint).where(GridPoint.request_id == self.request_id))

    def _measure_and_wait(self, measure_here: MeasureUnit) -> list[GridPoint]:
        while True:
            self.hooks.check_cancel()
            if (claim := claim_point(self.services, self.request_id, self._curve)) is not None:
                unit, claimed_at = claim
                store_point(self.services, self.request_id, unit, claimed_at, measure_here(unit))
                continue
            with self.services.factory() as session:
                rows = list(session.scalars(select(GridPoint).where(GridPoint.request_id == self.request_id)))
                session.expunge_all()
            if all(row.state in (State.SUCCEEDED, State.FAILED) for row in rows):
                return rows
            requeue_silent(self.services, self.request_id)
            time.sleep(WAIT_SECONDS)


def measure_grid(services: Services, request_id: str) -> int:
    """A helper's share of a running job's pass: queued rows until none is left. Returns how many."""
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
    meter = PointMeter(
        inputs.model, inputs.data, tensors, request.config, request.base_method, device=services.settings.device
    )
    done, idle_since = 0, time.monotonic()
    while True:
        if (claim := claim_point(services, request_id, curve)) is None:
            if time.monotonic() - idle_since > LINGER_SECONDS:
                return done
            time.sleep(WAIT_SECONDS)
            continue
        unit, claimed_at = claim
        try:
            stored = _measured(meter, unit)
        except Exception:
            log.warning("%s of %s failed here; its owner measures it", unit, request_id, exc_info=True)
            _release(services, request_id, unit, claimed_at)
            return done
        store_point(services, request_id, unit, claimed_at, stored)
        done, idle_since = done + 1, time.monotonic()


def _measured(meter: PointMeter, unit: Unit) -> dict[str, Any] | None:
    if unit.parts:
        return meter.part(unit.t, unit.part, unit.parts).to_dict()
    metrics = meter.point(unit.t)
    return metrics.to_dict() if metrics.is_finite() else None


def claim_point(services: Services, request_id: str, curve: str | None) -> tuple[Unit, Any] | None:
    """One queued row of this curve, now held by this worker: (its unit, the claim's time), or None."""
    with services.factory() as session, session.begin():
        row = session.execute(
            select(GridPoint.t, GridPoint.part, GridPoint.parts)
            .where(GridPoint.request_id == request_id, GridPoint.curve_sha256 == curve, GridPoint.state == State.QUEUED)
            .order_by(GridPoint.t, GridPoint.part)
            .limit(1)
        ).first()
        if row is None:
            return None
        unit, claimed_at = Unit(*row), utcnow()
        taken = session.execute(
            update(GridPoint)
            .where(*_unit(request_id, unit), GridPoint.state == State.QUEUED)
            .values(state=State.RUNNING, claimed_at=claimed_at, measured_by=services.worker_name)
        )
        if cast(CursorResult[Any], taken).rowcount != 1:  # another worker took it first: try the next one
            return claim_point(services, request_id, curve)
        return unit, claimed_at


def store_point(
    services: Services, request_id: str, unit: Unit, claimed_at: Any, stored: dict[str, Any] | None
) -> None:
    """The row's metrics or counts (None: rejected, non-finite), if this claim still holds it."""
    with services.factory() as session, session.begin():
        session.execute(
            update(GridPoint)
            .where(*_held(request_id, unit, claimed_at, services.worker_name))
            .values(state=State.SUCCEEDED if stored is not None else State.FAILED, metrics=stored)
        )


def requeue_silent(services: Services, request_id: str) -> None:
    """Rows claimed longer ago than the heartbeat timeout: their worker died (or is far too slow)."""
    silent = utcnow() - timedelta(seconds=services.settings.heartbeat_timeout_seconds)
    with services.factory() as session, session.begin():
        session.execute(
            update(GridPoint)
            .where(GridPoint.request_id == request_id, GridPoint.state == State.RUNNING, GridPoint.claimed_at < silent)
            .values(state=State.QUEUED, claimed_at=None, measured_by=None)
        )


def _release(services: Services, request_id: str, unit: Unit, claimed_at: Any) -> None:
    with services.factory() as session, session.begin():
        session.execute(
            update(GridPoint)
            .where(*_held(request_id, unit, claimed_at, services.worker_name))
            .values(state=State.QUEUED, claimed_at=None, measured_by=None)
        )


def _unit(request_id: str, unit: Unit) -> tuple[Any, ...]:
    return GridPoint.request_id == request_id, GridPoint.t == unit.t, GridPoint.part == unit.part


def _held(request_id: str, unit: Unit, claimed_at: Any, worker: str) -> tuple[Any, ...]:
    return (
        *_unit(request_id, unit),
        GridPoint.state == State.RUNNING,
        GridPoint.claimed_at == claimed_at,
        GridPoint.measured_by == worker,
    )
