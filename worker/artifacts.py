"""A request's intermediate artifacts (θ_p, θ_c, the per-epoch checkpoint) under `requests/<id>/`.

They were trained on the forget set: they are deleted once a version is published or the request is
cancelled (the clean-up task, sent by domain/lifecycle.py, or the reconciler when that task was lost), or
when a job starts over on a newer version.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from sqlalchemy import update

from domain.lifecycle import State
from models import DeletionRequest, record_event, utcnow
from storage import ObjectNotFound
from unlearning.mcu import Checkpoint
from worker.services import Services

THETA_P, THETA_C, CHECKPOINT = "theta_p", "theta_c", "checkpoint"


def tensor_bytes(tensors: dict[str, Any]) -> bytes:
    """safetensors bytes of tensors as a job holds them: on any device, convolution weights in channels_last
    (training.prepare_model), which safetensors refuses to save as they are."""
    return save_tensors({name: value.detach().cpu().contiguous() for name, value in tensors.items()})


def artifact_key(request_id: str, name: str) -> str:
    return f"requests/{request_id}/{name}.safetensors"


def load_optional(services: Services, request_id: str, name: str) -> bytes | None:
    try:
        return services.store.get_bytes(artifact_key(request_id, name))
    except ObjectNotFound:
        return None


def save(services: Services, request_id: str, name: str, blob: bytes) -> None:
    services.store.put_at(artifact_key(request_id, name), blob)


def stored_training(
    services: Services, request_id: str, *, record: bool = True
) -> tuple[dict[str, Any] | None, Checkpoint | None]:
    """The request's stored θ_p and last checkpoint, which a job resumes from; a resume is an event, `record`ed by
    the one process that speaks for the job."""
    theta_p = load_optional(services, request_id, THETA_P)
    checkpoint = load_optional(services, request_id, CHECKPOINT)
    resume = Checkpoint.from_bytes(checkpoint) if checkpoint else None
    if resume is not None and record:
        with services.factory() as session, session.begin():
            record_event(
                session, request_id, "resumed_from_checkpoint", State.RUNNING, "worker", {"epoch": resume.epoch}
            )
    return (load_tensors(theta_p) if theta_p else None), resume


def theta_p_saver(services: Services, request_id: str) -> Callable[[dict[str, Any]], None]:
    """A job's `on_theta_p`: θ_p stored once the base method made it."""
    return lambda state: save(services, request_id, THETA_P, tensor_bytes(state))


def checkpoint_saver(services: Services, request_id: str) -> Callable[[Checkpoint], None]:
    """A job's `on_checkpoint`: the curve's state stored after every epoch."""
    return lambda checkpoint: save(services, request_id, CHECKPOINT, checkpoint.to_bytes())


def delete_artifacts(services: Services, request_id: str) -> None:
    """Delete them all; the event names which were there (the proof-of-erasure report lists them)."""
    removed = services.store.delete_prefix(f"requests/{request_id}")
    present = [name for name in (THETA_P, THETA_C, CHECKPOINT) if artifact_key(request_id, name) in removed]
    with services.factory() as session, session.begin():
        session.execute(
            update(DeletionRequest).where(DeletionRequest.id == request_id).values(artifacts_deleted_at=utcnow())
        )
        record_event(
            session, request_id, "artifacts_deleted", None, "worker", {"objects": len(removed), "artifacts": present}
        )
