"""A registered model validated by workers in two stages: `validating` → `ready` | `invalid`.

1. The check (VALIDATE_MODEL, on the control queue; worker/model_check.py): the architecture builds within the
   validation budget, the weights load strictly, one small batch of the model's input runs through it. CPU
   only and without the dataset's rows; `mcu worker` consumes the control queue in a process of its own
   (worker/control_process.py), so a wrong architecture or wrong weights are `invalid` within seconds even
   while every GPU worker runs a long job. A model that passes is handed to
2. the measurement (MEASURE_MODEL, on the gpu queue): its test and train accuracy under the declared input
   transform and preprocessing, which version 1 carries once the model is `ready`.
Building an architecture happens only in workers, never in the API process. Every failure ends `invalid` with
a reason; only an outage (store, database) leaves the model `validating` for the reconciler to re-send (it
sends the check, which hands over again). The model row counts the attempts: each stage counts one when it
starts and a check that passed gives its own back, so only stages whose worker died stay counted; a model
whose validation started MCU_VALIDATION_MAX_ATTEMPTS times without a verdict ends `invalid` too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, cast

import torch
from sqlalchemy import select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import InterfaceError, OperationalError

from domain.catalog import ModelState
from domain.problems import problem_type
from domain.tasks import MEASURE_MODEL
from models import Dataset, Model, ModelVersion
from storage import StorageError
from unlearning.architectures import build_model as build_architecture
from unlearning.architectures import model_input_channels
from unlearning.data import InputAdapter, Subset, seeded_generator
from unlearning.metrics import accuracy
from unlearning.transforms import InputTransform
from worker import metrics, sandbox
from worker.inputs import load_dataset
from worker.model_check import InvalidModel, check, input_adapter_note, load_weights, model_shape
from worker.services import Services

log = logging.getLogger(__name__)
NEAR_CHANCE = "accuracy near chance under the declared preprocessing: check it"
# An outage, not the model: the model stays `validating` and the reconciler sends it again.
OUTAGES = (StorageError, OSError, OperationalError, InterfaceError)
PASSED = "passed"  # the check's outcome when the measurement follows
# A stage: None when the check passed, else the values of a `ready` model and of its version 1.
Stage = Callable[[Services, Model, ModelVersion, Dataset], tuple[dict[str, Any], dict[str, Any]] | None]


def check_model(services: Services, model_id: str) -> None:
    """The check, as the control queue's task: a model that passes goes to the gpu queue to be measured (a
    message lost on the way: the reconciler sends the check again)."""
    if _run(services, model_id, check) == PASSED:
        services.dispatcher.send(MEASURE_MODEL, model_id)


def measure_model(services: Services, model_id: str) -> None:
    """The measurement, as the gpu queue's task."""
    _run(services, model_id, _measure)


def validate_model(services: Services, model_id: str) -> None:
    """Both stages in this process, one after the other: the verdict is in when it returns."""
    if _run(services, model_id, check) == PASSED:
        _run(services, model_id, _measure)


def _run(services: Services, model_id: str, stage: Stage) -> str | None:
    """The stage's outcome (ready, invalid, interrupted, passed), or None when the model has its verdict."""
    claimed = _claim_attempt(services, model_id)
    if claimed is None:
        return None  # validated already: a duplicate delivery changes nothing
    with metrics.running(metrics.VALIDATE):
        outcome = _judge(services, model_id, stage, *claimed)
    if outcome != PASSED:
        metrics.count_validation(outcome)
    return outcome


def _judge(
    services: Services,
    model_id: str,
    stage: Stage,
    model: Model,
    version: ModelVersion,
    dataset_row: Dataset,
    attempt: int,
) -> str:
    try:
        if attempt > services.settings.validation_max_attempts:
            raise InvalidModel(
                f"validation did not finish: it started {attempt - 1} times and its worker stopped "
                "each time (MCU_VALIDATION_MAX_ATTEMPTS)",
                [{"loc": ["architecture"], "msg": "validation did not finish"}],
            )
        values = stage(services, model, version, dataset_row)
    except OUTAGES:
        log.warning("validation of model %s interrupted by an outage; it will be sent again", model_id, exc_info=True)
        _uncount_attempt(services, model_id)
        return "interrupted"
    except Exception as error:  # whatever the model makes fail is the model's verdict
        if not isinstance(error, InvalidModel):
            log.warning("validation of model %s failed", model_id, exc_info=True)
            error = InvalidModel(f"validation failed: {sandbox.public_text(f'{type(error).__name__}: {error}')}")
        log.info("model %s is invalid: %s", model_id, error)
        _settle(
            services,
            model_id,
            {
                "state": ModelState.INVALID,
                "error": {
                    "type": problem_type("invalid-model"),
                    "title": "The model cannot be used as registered",
                    "detail": str(error),
                    "errors": error.errors,
                },
            },
        )
        return "invalid"
    if values is None:  # the check passed: its attempt ended; the measurement counts its own
        _uncount_attempt(services, model_id)
        log.info("model %s passed its check; its measurement is next", model_id)
        return PASSED
    _settle(services, model_id, *values)
    return "ready"


def _claim_attempt(services: Services, model_id: str) -> tuple[Model, ModelVersion, Dataset, int] | None:
    """A validating model, its version 1 and dataset, and the number of this attempt (counted before anything
    can fail), or None when the model has its verdict."""
    with services.factory() as session, session.begin():
        model = session.get(Model, model_id)
        if model is None or model.state != ModelState.VALIDATING:
            return None
        version = session.scalar(
            select(ModelVersion).where(ModelVersion.model_id == model_id, ModelVersion.version == 1)
        )
        dataset_row = session.get(Dataset, model.dataset_id)
        assert version is not None and dataset_row is not None
        model.validation_attempts += 1
        attempt = model.validation_attempts
    return model, version, dataset_row, attempt


def _uncount_attempt(services: Services, model_id: str) -> None:
    """An attempt an outage ended returned: only attempts whose worker died stay counted. Best effort: with the
    database down too, it stays counted."""
    try:
        with services.factory() as session, session.begin():
            session.execute(
                update(Model)
                .where(Model.id == model_id, Model.validation_attempts > 0)
                .values(validation_attempts=Model.validation_attempts - 1)
            )
    except OUTAGES:
        log.warning("could not uncount the interrupted validation of model %s", model_id)


def _measure(
    services: Services, model: Model, version: ModelVersion, dataset_row: Dataset
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The values of a `ready` model and its version 1; InvalidModel naming what is wrong otherwise."""
    transform = InputTransform.from_dict(model.input_transform)
    input_shape = model_shape(model, dataset_row)
    # The check counted its parameters within the budget (it sent this task): it builds here.
    network = build_architecture(model.architecture, model.num_classes, input_shape, model.architecture_kwargs)
    load_weights(
        network, str(services.cache.path(version.storage_key, version.sha256)), model.architecture, model.num_classes
    )
    with services.factory() as session:
        dataset, _ = load_dataset(services, session, dataset_row, model.preprocessing, model.input_transform)
    assert dataset.normalization is not None
    channels = model_input_channels(model.architecture, input_shape[0], model.architecture_kwargs)
    note = input_adapter_note(model.architecture, input_shape[0], channels, len(dataset.normalization.mean))
    if transform is not None:
        note = f"input transform {transform.to_dict()} to {input_shape[1]}x{input_shape[2]}; then {note}"
    adapter = InputAdapter(dataset.normalization, channels)
    generator = seeded_generator(0)
    count = services.settings.validation_samples
    train = Subset(dataset.train_inputs, dataset.train_labels, torch.arange(len(dataset.train_labels)))
    test = Subset(dataset.test_inputs, dataset.test_labels, torch.arange(len(dataset.test_labels)))
    network.eval()
    metrics = {
        "test_accuracy": accuracy(network, test.sample(count, generator), adapter),
        "retain_accuracy": accuracy(network, train.sample(count, generator), adapter),
    }
    # "Near": within 10 points of chance, where a wrong preprocessing usually lands.
    warnings = [NEAR_CHANCE] if metrics["test_accuracy"] <= 1.0 / model.num_classes + 0.1 else []
    resolved = model.preprocessing | {"mean": list(dataset.normalization.mean), "std": list(dataset.normalization.std)}
    return (
        {
            "state": ModelState.READY,
            "error": None,
            "warnings": warnings,
            "preprocessing": resolved,
            "input_adapter": note,
        },
        {"metrics": metrics, "preprocessing": resolved},
    )


def _settle(
    services: Services, model_id: str, values: dict[str, Any], version_values: dict[str, Any] | None = None
) -> None:
    """The model's verdict and version 1's metrics in one transaction: never `ready` without them."""
    with services.factory() as session, session.begin():
        settled = (
            cast(
                CursorResult[Any],
                session.execute(  # an UPDATE's result (typed as a plain Result)
                    update(Model).where(Model.id == model_id, Model.state == ModelState.VALIDATING).values(**values)
                ),
            ).rowcount
            == 1
        )
        if settled and version_values:
            session.execute(
                update(ModelVersion)
                .where(ModelVersion.model_id == model_id, ModelVersion.version == 1)
                .values(**version_values)
            )
