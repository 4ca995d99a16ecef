"""Datasets, models and model versions: the reads the API serves, and a model's validation state.

A model is registered `validating`; a worker loads its weights into the architecture (worker/validation.py)
and sets `ready` or `invalid`. Only a ready model takes deletion requests; only an invalid one can be deleted.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from domain.lifecycle import enqueue_after_commit
from domain.pagination import PageOf, ascending, ascending_page, newest_first, newest_page
from domain.problems import Problem, not_found
from domain.tasks import VALIDATE_MODEL
from models import Dataset, IdempotencyRecord, Model, ModelVersion


class ModelState(StrEnum):
    VALIDATING = "validating"
    READY = "ready"
    INVALID = "invalid"


def get_dataset(session: Session, dataset_id: str) -> Dataset:
    row = session.get(Dataset, dataset_id)
    if row is None:
        raise not_found("dataset", dataset_id)
    return row


def page_of_datasets(session: Session, page_size: int, page_token: str | None) -> PageOf[Dataset]:
    rows = session.scalars(newest_first(select(Dataset), Dataset.created_at, Dataset.id, page_size, page_token))
    return newest_page(list(rows), page_size)


def get_model(session: Session, model_id: str) -> Model:
    row = session.get(Model, model_id)
    if row is None:
        raise not_found("model", model_id)
    return row


def delete_invalid_model(session: Session, model_id: str) -> list[str]:
    """Delete a model that failed validation with its version 1 (in `session`'s transaction, not committed);
    returns the storage keys of its weights, for `unreferenced` once committed. A ready model is never deleted:
    its versions and its deletion requests' evidence (reports, audit trails) must stay; a validating one waits
    for its verdict. The key that registered it may register it again (its idempotency record goes too)."""
    model = session.get(Model, model_id, with_for_update=True)  # the worker's verdict commits first, or after
    if model is None:
        raise not_found("model", model_id)
    if model.state != ModelState.INVALID:
        why = (
            "its versions, their weights and the evidence of its deletion requests (reports, audit trail) stay"
            if model.state == ModelState.READY
            else "it is still being validated: wait for the verdict"
        )
        raise Problem(
            409,
            f"model '{model_id}' is {model.state}: only a model that failed validation (state invalid) can be "
            f"deleted; {why}",
            slug="model-not-deletable",
            title="Model not deletable",
        )
    keys = list(session.scalars(select(ModelVersion.storage_key).where(ModelVersion.model_id == model_id)))
    session.execute(delete(ModelVersion).where(ModelVersion.model_id == model_id))
    session.execute(
        delete(IdempotencyRecord).where(IdempotencyRecord.route == "models", IdempotencyRecord.resource_id == model_id)
    )
    session.execute(delete(Model).where(Model.id == model_id))
    return keys


def unreferenced(session: Session, keys: list[str]) -> list[str]:
    """The objects of `keys` no version's kept weights point at: objects are content-addressed, so another
    model registered with the same bytes shares one."""
    live = set(
        session.scalars(
            select(ModelVersion.storage_key).where(
                ModelVersion.storage_key.in_(keys), ModelVersion.weights_deleted_at.is_(None)
            )
        )
    )
    return [key for key in dict.fromkeys(keys) if key not in live]


def register_model(session: Session, model: Model, version: ModelVersion) -> None:
    """A new model and its version 1, to be validated by a worker once committed."""
    model.state = ModelState.VALIDATING
    session.add(model)
    session.flush()
    session.add(version)
    enqueue_after_commit(session, VALIDATE_MODEL, model.id)


def page_of_models(session: Session, page_size: int, page_token: str | None) -> PageOf[Model]:
    rows = session.scalars(newest_first(select(Model), Model.created_at, Model.id, page_size, page_token))
    return newest_page(list(rows), page_size)


def page_of_versions(session: Session, model_id: str, page_size: int, page_token: str | None) -> PageOf[ModelVersion]:
    get_model(session, model_id)
    rows = session.scalars(
        ascending(
            select(ModelVersion).where(ModelVersion.model_id == model_id), ModelVersion.version, page_size, page_token
        )
    )
    return ascending_page(list(rows), page_size, "version")


def get_version(session: Session, model_id: str, version: int) -> ModelVersion:
    get_model(session, model_id)
    row = session.scalar(select(ModelVersion).where(ModelVersion.model_id == model_id, ModelVersion.version == version))
    if row is None:
        raise Problem(404, f"model '{model_id}' has no version {version}")
    return row
