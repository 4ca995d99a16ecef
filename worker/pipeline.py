"""What a worker does for one request, between the object store, the database and `unlearning/`.

Artifacts of a request live under `requests/<id>/` in the object store (θ_p, θ_c, the per-epoch
checkpoint); they were trained on the forget set and are deleted once a version is published or the
request is cancelled.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import load_file
from safetensors.torch import save as save_tensors
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from models import CurvePoint, Dataset, DeletionRequest, Model, ModelVersion, Sample, record_event, utcnow
from settings import Settings
from storage import LocalCache, ObjectNotFound, ObjectStore
from unlearning import (
    Cancelled,
    Checkpoint,
    ImageDataset,
    JobHooks,
    Normalization,
    Progress,
    build_model,
    make_unlearning_data,
    materialize_point,
    model_input_channels,
    run_unlearning,
)
from unlearning.data import UnlearningData

log = logging.getLogger(__name__)
PROGRESS_EVERY_SECONDS = 1.0
CANCEL_POLL_SECONDS = 0.2


def artifact_key(request_id: str, name: str) -> str:
    return f"requests/{request_id}/{name}.safetensors"


def artifacts_prefix(request_id: str) -> str:
    return f"requests/{request_id}"


@dataclass
class Services:
    """What a task needs from the outside world."""

    settings: Settings
    factory: sessionmaker[Session]
    store: ObjectStore
    cache: LocalCache
    notify: Callable[[str, str], None]  # (request id, state) -> queue a callback delivery


class StopJob(Exception):
    """The request left the state this worker was serving (cancelled elsewhere, taken over)."""


# --- claiming and state changes ---------------------------------------------------------------------------

def claim(services: Services, request_id: str, from_state: str, new_state: str) -> DeletionRequest | None:
    """Take the job: `from_state` → `new_state`. A request already in `new_state` is taken only while nobody
    holds it (no heartbeat yet, or a silent one: its worker died). Returns the row when this worker owns it."""
    stale_before = utcnow() - timedelta(seconds=services.settings.heartbeat_timeout_seconds)
    with services.factory() as session, session.begin():
        row = session.get(DeletionRequest, request_id, with_for_update=True)
        if row is None:
            return None
        if row.state == new_state:
            if row.heartbeat_at is not None and row.heartbeat_at >= stale_before:
                return None  # alive elsewhere
            event = "claimed" if row.heartbeat_at is None else "resumed"
        elif row.state == from_state:
            event = "state_changed"
        else:
            return None
        now = utcnow()
        row.state, row.heartbeat_at = new_state, now
        row.started_at = row.started_at or now
        record_event(session, request_id, event, new_state, "worker")
        session.flush()
        session.expunge(row)
        return row


def finish(services: Services, request_id: str, state: str, *, from_states: tuple[str, ...],
           values: dict[str, Any] | None = None, detail: dict[str, Any] | None = None) -> bool:
    with services.factory() as session, session.begin():
        # Leaving a state releases the job: the next holder (materialiser, reconciler) claims it afresh.
        done = session.execute(update(DeletionRequest).where(DeletionRequest.id == request_id,
                                                             DeletionRequest.state.in_(from_states))
                               .values(state=state, **({"heartbeat_at": None} | (values or {})))).rowcount == 1
        if done:
            record_event(session, request_id, "state_changed", state, "worker", detail)
    if done and state in ("awaiting_selection", "succeeded", "failed", "cancelled"):
        services.notify(request_id, state)
    return done


def fail(services: Services, request_id: str, error: Exception) -> None:
    body = problem_for(error)
    log.warning("request %s failed: %s", request_id, body["detail"])
    finish(services, request_id, "failed", from_states=("running", "materializing", "cancelling"),
           values={"error": body, "finished_at": utcnow()}, detail={"error": body["title"]})


def problem_for(error: Exception) -> dict[str, str]:
    """An error body a user can act on, without internals."""
    from unlearning import ConfigError, ForgetSetError
    from unlearning.training import DivergenceError

    known: dict[type, tuple[str, str]] = {
        ConfigError: ("invalid-config", "Invalid configuration"),
        ForgetSetError: ("invalid-forget-set", "Invalid forget set"),
        DivergenceError: ("diverged", "Training diverged; lower lr or beta, or tighten guard.forget_loss_cap"),
        ObjectNotFound: ("artifact-missing", "A stored artifact is missing"),
    }
    for kind, (slug, title) in known.items():
        if isinstance(error, kind):
            return {"type": f"https://mcu.dev/problems/{slug}", "title": title, "detail": str(error)}
    return {"type": "https://mcu.dev/problems/job-failed", "title": "Unlearning job failed",
            "detail": f"{type(error).__name__}: {error}"[:2000]}


# --- watching a running job --------------------------------------------------------------------------------

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
        self._threads = [threading.Thread(target=self._beat, daemon=True),
                         threading.Thread(target=self._watch_cancel, daemon=True)]

    def __enter__(self) -> JobWatch:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.wait(self.services.settings.heartbeat_interval_seconds):
            try:
                self._write({})
            except Exception:
                log.warning("heartbeat of %s failed", self.request_id, exc_info=True)

    def _write(self, values: dict[str, Any]) -> None:
        with self.services.factory() as session, session.begin():
            moved = session.execute(update(DeletionRequest).where(DeletionRequest.id == self.request_id,
                                                                  DeletionRequest.state == self.state)
                                    .values(heartbeat_at=utcnow(), **values)).rowcount
            if not moved:
                raise StopJob(f"{self.request_id} is no longer {self.state}")

    def on_progress(self, progress: Progress) -> None:
        now = time.monotonic()
        new_phase = progress.phase != self._phase
        if not new_phase and now - self._last_write < PROGRESS_EVERY_SECONDS and progress.fraction < 1.0:
            return
        self._last_write = now
        values = {"progress": {"phase": progress.phase, "fraction": round(progress.fraction, 4),
                               "epoch": progress.epoch, "epochs": progress.epochs}}
        try:
            self._write(values)
        except StopJob:
            return  # the cancel check below ends the job
        if new_phase:
            self._phase = progress.phase
            with self.services.factory() as session, session.begin():
                record_event(session, self.request_id, "phase_started", self.state, "worker",
                             {"phase": progress.phase})

    def _watch_cancel(self) -> None:
        while not self._stop.wait(CANCEL_POLL_SECONDS):
            try:
                with self.services.factory() as session:
                    row = session.execute(select(DeletionRequest.cancel_requested, DeletionRequest.state)
                                          .where(DeletionRequest.id == self.request_id)).one()
            except Exception:
                log.warning("cancel check of %s failed", self.request_id, exc_info=True)
                continue
            if row.cancel_requested or row.state != self.state:
                self._cancelled.set()
                return

    def should_cancel(self) -> bool:
        return self._cancelled.is_set()

    def hooks(self) -> JobHooks:
        return JobHooks(on_progress=self.on_progress, should_cancel=self.should_cancel)


# --- loading data and weights ------------------------------------------------------------------------------

def erased_positions(session: Session, model_id: str, excluding: str) -> set[int]:
    """Training rows erased by this model's succeeded requests: they take no part in later jobs."""
    rows = session.scalars(select(DeletionRequest.forget_positions).where(
        DeletionRequest.model_id == model_id, DeletionRequest.state == "succeeded",
        DeletionRequest.id != excluding)).all()
    return {p for positions in rows for p in positions}


def load_dataset(services: Services, session: Session, dataset: Dataset) -> ImageDataset:
    """The dataset's train and test splits in position order, assembled from its cached shards."""
    shards = [load_file(services.cache.path(s["key"], s["sha256"])) for s in dataset.shards]
    splits = {}
    for split in ("train", "test"):
        rows = session.execute(select(Sample.shard, Sample.row).where(Sample.dataset_id == dataset.id,
                                                                      Sample.split == split)
                               .order_by(Sample.position)).all()
        shard_index = torch.tensor([r.shard for r in rows], dtype=torch.int64)
        row_index = torch.tensor([r.row for r in rows], dtype=torch.int64)
        first = shards[0]["inputs"]
        inputs = torch.empty((len(rows), *first.shape[1:]), dtype=first.dtype)
        labels = torch.empty(len(rows), dtype=torch.int64)
        for k, shard in enumerate(shards):
            chosen = shard_index == k
            inputs[chosen] = shard["inputs"][row_index[chosen]]
            labels[chosen] = shard["labels"][row_index[chosen]]
        splits[split] = (inputs, labels)
    (train_x, train_y), (test_x, test_y) = splits["train"], splits["test"]
    # Normalisation is fixed per dataset (the full train split), so every version sees the same inputs.
    return ImageDataset(train_x, train_y, test_x, test_y, dataset.num_classes, Normalization.fit(train_x))


def load_model(services: Services, session: Session, model: Model, version: int, input_shape: tuple[int, ...]
               ) -> torch.nn.Module:
    row = session.scalar(select(ModelVersion).where(ModelVersion.model_id == model.id,
                                                    ModelVersion.version == version))
    if row is None:
        raise ObjectNotFound(f"model {model.id} version {version}")
    network = build_model(model.architecture, model.num_classes, input_shape)
    network.load_state_dict(load_file(services.cache.path(row.storage_key, row.sha256)))
    return network.eval()


@dataclass
class JobInputs:
    model: torch.nn.Module
    data: UnlearningData
    row: DeletionRequest


def load_inputs(services: Services, request_id: str) -> JobInputs:
    with services.factory() as session:
        row = session.get(DeletionRequest, request_id)
        assert row is not None
        model = session.get(Model, row.model_id)
        assert model is not None
        dataset_row = session.get(Dataset, model.dataset_id)
        assert dataset_row is not None
        dataset = load_dataset(services, session, dataset_row)
        erased = erased_positions(session, model.id, excluding=request_id)
        network = load_model(services, session, model, row.model_version, dataset.input_shape)
    channels = model_input_channels(model.architecture, dataset.input_shape[0])
    keep = torch.tensor([p for p in range(len(dataset.train_labels)) if p not in erased], dtype=torch.int64)
    forget = [p for p in row.forget_positions if p not in erased]
    # Rows erased by earlier requests leave the training set entirely; forget positions are renumbered.
    trimmed = ImageDataset(dataset.train_inputs[keep], dataset.train_labels[keep], dataset.test_inputs,
                           dataset.test_labels, dataset.num_classes, dataset.normalization)
    renumbered = torch.searchsorted(keep, torch.tensor(forget, dtype=torch.int64))
    if "classes" in row.forget:
        data = make_unlearning_data(trimmed, channels=channels, forget_classes=row.forget["classes"])
    else:
        data = make_unlearning_data(trimmed, channels=channels, forget_indices=renumbered)
    return JobInputs(network, data, row)


# --- the two jobs ------------------------------------------------------------------------------------------

def _load_optional(store: ObjectStore, key: str) -> bytes | None:
    try:
        return store.get_bytes(key)
    except ObjectNotFound:
        return None


def run_request(services: Services, request_id: str) -> None:
    """queued → running → awaiting_selection (or straight on with selection: auto)."""
    row = claim(services, request_id, "queued", "running")
    if row is None:
        return  # finished, cancelled, or alive elsewhere: a duplicate delivery changes nothing
    rebase_onto_current_version(services, request_id)
    store = services.store
    try:
        with JobWatch(services, request_id, "running") as watch:
            inputs = load_inputs(services, request_id)
            theta_p_blob = _load_optional(store, artifact_key(request_id, "theta_p"))
            checkpoint_blob = _load_optional(store, artifact_key(request_id, "checkpoint"))
            resume = Checkpoint.from_bytes(checkpoint_blob) if checkpoint_blob else None
            if resume is not None:
                with services.factory() as session, session.begin():
                    record_event(session, request_id, "resumed_from_checkpoint", "running", "worker",
                                 {"epoch": resume.epoch})
            result = run_unlearning(
                inputs.model, inputs.data, row.base_method, row.config, device=services.settings.device,
                hooks=watch.hooks(), theta_p=load_tensors(theta_p_blob) if theta_p_blob else None, resume=resume,
                on_theta_p=lambda state: store.put_at(artifact_key(request_id, "theta_p"), save_tensors(state)),
                on_checkpoint=lambda c: store.put_at(artifact_key(request_id, "checkpoint"), c.to_bytes()),
            )
            store.put_at(artifact_key(request_id, "theta_c"),
                         save_tensors({k: v.cpu().contiguous() for k, v in result.curve.control.items()}))
    except (Cancelled, StopJob):
        cancel_finished(services, request_id)
        return
    except Exception as error:  # noqa: BLE001  (every failure becomes a `failed` request with a reason)
        fail(services, request_id, error)
        return
    summary = result.to_dict()
    curve = {"recommended_t": result.recommended_t, "effective_region": result.effective_region,
             "targets": summary["targets"], "recommended_t_reference_window": result.recommended_t_reference_window,
             "timings": result.timings, "mask": result.mask, "training": result.training}
    auto = row.selection_mode == "auto"
    with services.factory() as session, session.begin():
        session.query(CurvePoint).filter(CurvePoint.request_id == request_id).delete()
        for p in result.points:
            session.add(CurvePoint(request_id=request_id, **p.to_dict()))
        values: dict[str, Any] = {"curve": curve, "progress": {"phase": "evaluate", "fraction": 1.0}}
        if auto:
            values |= {"selected_t": result.recommended_t, "selected_by": "auto", "selected_at": utcnow()}
        session.execute(update(DeletionRequest).where(DeletionRequest.id == request_id).values(**values))
    if not finish(services, request_id, "awaiting_selection", from_states=("running",),
                  detail={"recommended_t": result.recommended_t, "points": len(result.points)}):
        return
    if auto and finish(services, request_id, "materializing", from_states=("awaiting_selection",),
                       detail={"t": result.recommended_t, "selected_by": "auto"}):
        materialize_selection(services, request_id)


def materialize_selection(services: Services, request_id: str) -> None:
    """materializing → succeeded: φ(t) with retain-only BN statistics becomes the model's next version."""
    row = claim(services, request_id, "materializing", "materializing")
    if row is None:
        return
    if row.selected_version is not None:  # a version was already published for this request
        finish_published(services, request_id)
        return
    store = services.store
    try:
        with JobWatch(services, request_id, "materializing") as watch:
            watch.on_progress(Progress("materialize", 0.0))
            inputs = load_inputs(services, request_id)
            tensors = {name: load_tensors(store.get_bytes(artifact_key(request_id, name)))
                       for name in ("theta_c", "theta_p")}
            tensors["theta_o"] = inputs.model.state_dict()
            assert row.selected_t is not None
            state, metrics = materialize_point(inputs.model, inputs.data, tensors, row.config, row.base_method,
                                               row.selected_t, device=services.settings.device)
            blob = save_tensors({k: v.contiguous() for k, v in state.items()})
            obj = store.put_bytes("weights", blob)
            watch.on_progress(Progress("materialize", 1.0))
    except (Cancelled, StopJob):
        cancel_finished(services, request_id)
        return
    except Exception as error:  # noqa: BLE001
        fail(services, request_id, error)
        return
    outcome = publish_version(services, row, obj.key, obj.sha256, obj.size, metrics.to_dict())
    if outcome == "published":
        finish_published(services, request_id)
    elif outcome == "stale":
        requeue_on_current_version(services, request_id)
    else:
        cancel_finished(services, request_id)


def publish_version(services: Services, row: DeletionRequest, key: str, sha256: str, size: int,
                    metrics: dict[str, Any]) -> str:
    """Next version of the model, made current, in one transaction; exactly one per request.

    Returns "published"; "cancelled" when the request was cancelled meanwhile (it publishes nothing); or
    "stale" when another request published a version since this one's base: publishing weights derived
    from the older version would bring back what that request erased.
    """
    try:
        with services.factory() as session, session.begin():
            # The request row is locked first, so a cancel cannot slip in between this check and the commit.
            state = session.scalar(select(DeletionRequest.state).where(DeletionRequest.id == row.id)
                                   .with_for_update())
            if state != "materializing":
                return "cancelled"
            model = session.get(Model, row.model_id, with_for_update=True)
            assert model is not None
            if model.current_version != row.model_version:
                return "stale"
            latest = session.scalar(select(ModelVersion.version).where(ModelVersion.model_id == model.id)
                                    .order_by(ModelVersion.version.desc()).limit(1)) or 0
            version = latest + 1
            session.add(ModelVersion(model_id=model.id, version=version, sha256=sha256, storage_key=key, size=size,
                                     parent_version=row.model_version, deletion_request_id=row.id,
                                     t=row.selected_t, metrics=metrics))
            model.current_version = version
            session.execute(update(DeletionRequest).where(DeletionRequest.id == row.id)
                            .values(selected_version=version))
            record_event(session, row.id, "version_published", "materializing", "worker",
                         {"version": version, "sha256": sha256, "t": row.selected_t})
    except IntegrityError:
        log.info("version for %s already published", row.id)  # a duplicate delivery raced us
    return "published"


def requeue_on_current_version(services: Services, request_id: str) -> None:
    """Start a stale request over on the model's current version (the reconciler sends it again).

    Its curve, selection and artifacts belong to the old version and are dropped; with manual selection
    the operator picks a point again on the new curve.
    """
    with services.factory() as session, session.begin():
        row = session.get(DeletionRequest, request_id, with_for_update=True)
        model = session.get(Model, row.model_id) if row else None
        if row is None or model is None or row.state != "materializing":
            return
        session.query(CurvePoint).filter(CurvePoint.request_id == request_id).delete()
        record_event(session, request_id, "rebased", "queued", "worker",
                     {"from_version": row.model_version, "to_version": model.current_version,
                      "reason": "another request published a version first"})
        row.model_version, row.state, row.curve = model.current_version, "queued", None
        row.selected_t = row.selected_by = row.selected_at = row.heartbeat_at = row.dispatched_at = None
        row.progress = {"phase": "queued", "fraction": 0.0}
    cleanup_artifacts(services, request_id)


def rebase_onto_current_version(services: Services, request_id: str) -> None:
    """A job starts from the model's newest version; stored artifacts of an older base are discarded."""
    with services.factory() as session, session.begin():
        row = session.get(DeletionRequest, request_id, with_for_update=True)
        model = session.get(Model, row.model_id) if row else None
        if row is None or model is None or row.model_version == model.current_version:
            return
        record_event(session, request_id, "rebased", row.state, "worker",
                     {"from_version": row.model_version, "to_version": model.current_version})
        row.model_version = model.current_version
    cleanup_artifacts(services, request_id)


def finish_published(services: Services, request_id: str) -> None:
    # A cancel that arrives once the version is published comes too late: the erasure is done.
    if finish(services, request_id, "succeeded", from_states=("materializing", "cancelling"),
              values={"finished_at": utcnow()}):
        cleanup_artifacts(services, request_id)


def cancel_finished(services: Services, request_id: str) -> None:
    if finish(services, request_id, "cancelled", from_states=("running", "materializing", "cancelling"),
              values={"finished_at": utcnow()}):
        cleanup_artifacts(services, request_id)


def cancelled_by_api(services: Services, request_id: str) -> None:
    """The API cancelled a request no worker held (queued, awaiting or unclaimed selection): delete what it
    left and send the `cancelled` callback a worker would have sent."""
    cleanup_artifacts(services, request_id)
    with services.factory() as session:
        state = session.scalar(select(DeletionRequest.state).where(DeletionRequest.id == request_id))
    if state == "cancelled":
        services.notify(request_id, "cancelled")


def cleanup_artifacts(services: Services, request_id: str) -> None:
    """Delete θ_p, θ_c and checkpoints: they were trained on the forget set."""
    removed = services.store.delete_prefix(artifacts_prefix(request_id))
    with services.factory() as session, session.begin():
        record_event(session, request_id, "artifacts_deleted", None, "worker", {"objects": removed})
