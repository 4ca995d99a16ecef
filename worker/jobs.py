"""The worker's two jobs for a deletion request: train and measure the curve, then publish a chosen point.

    run_request:            queued → running → awaiting_selection (→ materializing, with selection: auto)
    materialize_selection:  materializing → succeeded (→ awaiting_selection when the measured point fails the
                            erasure criterion and nobody acknowledged that)

Each claims the request first (domain/lifecycle.py), so a duplicate delivery of a finished or live job
changes nothing, and a job whose worker died is resumed from its last checkpoint.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from safetensors.torch import load as load_tensors
from sqlalchemy import delete, select

from domain.coalesce import job, positions_of
from domain.erasure import METRICS, Judgement, auto_choice, judge, power
from domain.lifecycle import WORKER_HELD, State, claim, sources_of, transition
from models import CurvePoint, DeletionRequest, record_event, utcnow
from unlearning.architectures import has_batchnorm
from unlearning.pipeline import CurveResult, UnlearningJob, materialize_point
from unlearning.spectrum import target_gap
from unlearning.training import Cancelled, JobHooks, Progress
from worker import artifacts, metrics
from worker.coalescing import restart_without_cancelled, waits_for_members
from worker.data_parallel import devices_per_job, train_on_ranks
from worker.errors import problem_for
from worker.grid import WorkerGridFanout
from worker.inputs import load_inputs
from worker.publish import (
    Outcome,
    base_is_current,
    publish_version,
    rebase_onto_current_version,
    requeue_on_current_version,
)
from worker.services import Services, StopJob
from worker.watch import JobWatch

log = logging.getLogger(__name__)


def run_request(services: Services, request_id: str) -> None:
    if waits_for_members(services, request_id):
        return
    request = _claim(services, request_id, State.QUEUED, State.RUNNING)
    if request is None:
        return  # finished, cancelled, alive elsewhere, or a member of another request's job
    with metrics.running(metrics.RUN):
        rebase_onto_current_version(services, request)
        while True:
            try:
                with JobWatch(services, request_id, State.RUNNING) as watch:
                    result = _train_curve(services, request, watch)
            except (Cancelled, StopJob):
                if restart_without_cancelled(services, request_id):
                    continue
                finish(services, request_id, State.CANCELLED)
                return
            except Exception as error:  # noqa: BLE001  (every failure becomes a `failed` request with a reason)
                _fail(services, request_id, error, metrics.RUN)
                return
            break
        _store_curve(services, request, result)


def _train_curve(services: Services, request: DeletionRequest, watch: JobWatch) -> CurveResult:
    """Base method, mask and curve, resuming from stored θ_p and checkpoint; θ_c is stored at the end."""
    inputs = load_inputs(services, request)
    base_done = services.store.exists(artifacts.artifact_key(request.id, artifacts.THETA_P))
    fanout = WorkerGridFanout(services, request.id, watch.hooks()) if services.settings.grid_fanout else None
    job = UnlearningJob(inputs.model, inputs.data, request.base_method, request.config,
                        device=services.settings.device, hooks=watch.hooks(), base_done=base_done)
    devices = devices_per_job(services.settings.devices_per_job, services.settings.device)
    if devices > 1:  # torchrun ranks in processes of their own; this process measures the curve they trained
        trained = train_on_ranks(request.id, job, devices)
    else:
        savers = artifacts.theta_p_saver(services, request.id), artifacts.checkpoint_saver(services, request.id)
        trained = job.train(*artifacts.stored_training(services, request.id), *savers)
    result = job.measure(trained, fanout)
    if fanout is not None:
        result.training["grid_points_by_worker"] = dict(fanout.measured_by)
        result.training["recommended_point_parts_by_worker"] = dict(fanout.parts_by)
    else:  # with a fan-out, stored before the grid for the helpers
        artifacts.save(services, request.id, artifacts.THETA_C, artifacts.tensor_bytes(result.curve.control))
    metrics.observe_curve(services, request, result.timings, resumed=base_done)
    return result


def _store_curve(services: Services, request: DeletionRequest, result: CurveResult) -> None:
    """The points and summary, then awaiting_selection; with selection: auto straight on to materializing."""
    recommended = result.recommended_point  # measured on every row, with its standard errors
    summary: dict[str, Any] = {"recommended_t": result.recommended_t, "effective_region": result.effective_region,
               "recommended_point": recommended.to_dict() if recommended else None,
               "theta_o_version": request.model_version,
               "targets": asdict(result.targets),
               "recommended_t_reference_window": result.recommended_t_reference_window,
               "timings": result.timings, "mask": result.mask, "training": result.training,
               "batchnorm": ("statistics recomputed on retain rows at every point" if has_batchnorm(result.curve.model)
                             else "none in the model: recompute skipped")}
    with services.factory() as session, session.begin():
        requests = job(session, request)
        job_ids = [r.id for r in requests]  # each shows the shared curve
        session.execute(delete(CurvePoint).where(CurvePoint.request_id.in_(job_ids)))
        session.add_all(CurvePoint(request_id=r, **p.to_dict()) for r in job_ids for p in result.points)
        forget_count = len(positions_of(requests))
        original = next((p.to_dict() for p in result.points if p.t == 0.0), None)  # θ_o, as the curve measured it
        strength = power(original, summary["targets"], forget_count, request.erasure_criterion)
        summary["erasure_power"] = strength  # what a selection is judged with (domain/requests.py select_point)
        if not transition(session, request.id, State.AWAITING_SELECTION, actor="worker", from_=[State.RUNNING],
                          values={"curve_summary": summary, "heartbeat_at": None, "restart_requested": False,
                                  "progress": {"phase": "evaluate", "fraction": 1.0, "overall": 1.0}},
                          detail={"recommended_t": result.recommended_t, "points": len(result.points)}):
            return
        if strength["decidable"] is False:  # said once, where the operator and the audit trail both see it
            record_event(session, request.id, "erasure_criterion_undecidable", State.AWAITING_SELECTION, "worker",
                         {"detail": strength["statement"], "checks": strength["checks"]})
        if request.selection_mode != "auto":
            return
        ranked = sorted(result.points, key=lambda p: float(target_gap(p.to_dict(), result.targets)))
        t, judgement = auto_choice([p.to_dict() for p in ranked], result.recommended_t, summary["targets"],
                                   forget_count, request.erasure_criterion, strength)
        if t is None:  # nothing on the curve shows erasure: an operator decides
            record_event(session, request.id, "erasure_criterion_not_met", State.AWAITING_SELECTION, "worker",
                         {"t": result.recommended_t, "reasons": judgement.reasons,
                          "detail": "no point of the curve meets the erasure criterion: auto selection withheld"})
            return
        transition(session, request.id, State.MATERIALIZING, actor="worker", from_=[State.AWAITING_SELECTION],
                   values={"selected_t": t, "selected_by": "auto", "selected_at": utcnow()},
                   detail={"t": t, "selected_by": "auto"} | ({} if judgement.met else {
                       "instead_of": result.recommended_t, "because": judgement.reasons}))


def materialize_selection(services: Services, request_id: str) -> None:
    """φ(t) with retain-only BatchNorm statistics becomes the model's next version."""
    request = _claim(services, request_id, State.MATERIALIZING, State.MATERIALIZING)
    if request is None:
        return
    if request.selected_version is not None:  # published before a crash: only the state change is left
        finish(services, request_id, State.SUCCEEDED)
        return
    if not base_is_current(services, request):  # its θ_o may be deleted already (worker/erasure.py)
        requeue_on_current_version(services, request_id)
        return
    with metrics.running(metrics.MATERIALIZE):
        _materialize(services, request)


def _materialize(services: Services, request: DeletionRequest) -> None:
    request_id = request.id
    try:
        with (JobWatch(services, request_id, State.MATERIALIZING) as watch,
              metrics.phase(services, request, "materialize")):
            watch.on_progress(Progress("materialize", 0.0))
            assert request.selected_t is not None
            state, measured, judgement = measure_at(services, request, request.selected_t, watch.hooks())
            if not judgement.met and request.selection_acknowledgement is None:
                _withhold(services, request_id, judgement.reasons)
                return
            weights = artifacts.tensor_bytes(state)
            stored = services.store.put_bytes("weights", weights)
            watch.on_progress(Progress("materialize", 1.0))
    except (Cancelled, StopJob):
        finish(services, request_id, State.CANCELLED)
        return
    except Exception as error:  # noqa: BLE001
        _fail(services, request_id, error, metrics.MATERIALIZE)
        return
    with metrics.phase(services, request, "publish"):
        outcome = publish_version(services, request, stored, weights, measured)
    if outcome is Outcome.PUBLISHED:
        finish(services, request_id, State.SUCCEEDED)
    elif outcome is Outcome.STALE:
        requeue_on_current_version(services, request_id)
    else:
        finish(services, request_id, State.CANCELLED)


def measure_at(
    services: Services, request: DeletionRequest, t: float, hooks: JobHooks
) -> tuple[dict[str, Any], dict[str, Any], Judgement]:
    """φ(t) of the request's stored curve: its weights, its full-set metrics with the attacks' evidence
    (`measured`), and the erasure criterion's verdict on them."""
    inputs = load_inputs(services, request)
    tensors = {name: load_tensors(services.store.get_bytes(artifacts.artifact_key(request.id, name)))
               for name in (artifacts.THETA_C, artifacts.THETA_P)}
    tensors["theta_o"] = inputs.model.state_dict()
    assert request.curve_summary is not None
    state, point, evidence = materialize_point(inputs.model, inputs.data, tensors, request.config,
                                               request.base_method, t, device=services.settings.device, hooks=hooks)
    measured = point.to_dict() | {"evidence": evidence}
    targets, criterion = request.curve_summary["targets"], request.erasure_criterion
    strength = power(_original_point(services, request.id), targets, inputs.forget_rows, criterion, evidence)
    return state, measured, judge(measured, targets, inputs.forget_rows, criterion, strength)


def _original_point(services: Services, request_id: str) -> dict[str, float] | None:
    """θ_o's metrics as the curve measured them (its t = 0 point)."""
    with services.factory() as session:
        row = session.scalar(select(CurvePoint).where(CurvePoint.request_id == request_id, CurvePoint.t == 0.0))
        return None if row is None else {m: getattr(row, m) for m in METRICS}


def _withhold(services: Services, request_id: str, reasons: list[str]) -> None:
    """The point, measured, fails the erasure criterion its estimate met: nothing is published, and the
    request goes back to the operator."""
    with services.factory() as session, session.begin():
        if transition(session, request_id, State.AWAITING_SELECTION, actor="worker", from_=[State.MATERIALIZING],
                      values={"selected_t": None, "selected_by": None, "selected_at": None, "heartbeat_at": None},
                      detail={"reason": "the selected point does not meet the erasure criterion"}):
            record_event(session, request_id, "erasure_criterion_not_met", State.AWAITING_SELECTION, "worker",
                         {"reasons": reasons})


def _claim(services: Services, request_id: str, from_state: State, to_state: State) -> DeletionRequest | None:
    stale_before = utcnow() - timedelta(seconds=services.settings.heartbeat_timeout_seconds)
    with services.factory() as session, session.begin():
        return claim(session, request_id, from_state, to_state, stale_before, services.worker_name)


def finish(services: Services, request_id: str, to: State, *, values: dict[str, Any] | None = None,
           detail: dict[str, Any] | None = None) -> bool:
    """Leave the held state for a final one (succeeded, failed, cancelled); leaving releases the job (no
    heartbeat). Also what the reconciler does for a `cancelling` request whose worker died."""
    with services.factory() as session, session.begin():
        return transition(session, request_id, to, actor="worker", detail=detail,
                          values={"heartbeat_at": None, "finished_at": utcnow()} | (values or {}),
                          from_=[s for s in sources_of(to) if s in WORKER_HELD])


def _fail(services: Services, request_id: str, error: Exception, task: str) -> None:
    """Logged here only (the task returns, so Celery logs nothing): with its traceback when worker/errors.py
    knows no cause for it. The stored problem is what a user can act on, without internals."""
    body = problem_for(error)
    problem = metrics.problem_label(body)
    unexpected = problem not in metrics.EXPECTED
    log.log(logging.ERROR if unexpected else logging.WARNING, "request %s failed (%s): %s", request_id, problem,
            body["detail"], exc_info=error if unexpected else None)
    if finish(services, request_id, State.FAILED, values={"error": body}, detail={"error": body["title"]}):
        metrics.FAILURES.labels(task, problem).inc()
