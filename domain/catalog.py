"""Datasets, models and model versions: the reads the API serves, and a model's validation state.

A model is registered `validating`; a worker loads its weights into the architecture (worker/validation.py)
and sets `ready` or `invalid`. Only a ready model takes deletion requests.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.lifecycle import enqueue_after_commit
from domain.pagination import PageOf, ascending, ascending_page, newest_first, newest_page
from domain.problems import Problem, not_found
from models import Dataset, Model, ModelVersion
from worker.dispatch import VALIDATE_MODEL


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
