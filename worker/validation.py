"""A registered model checked by a worker: `validating` → `ready` | `invalid`.

Building an architecture happens only here and in the jobs, never in the API process. Its arguments are
checked first (domain/architectures.py: no files, downloads or devices), then a foreign constructor (timm,
torchvision) counts its parameters on the meta device in a child process with a time and memory budget
(worker/sandbox.py), so a deliberately huge or hostile architecture is refused before any allocation here.
Every failure ends `invalid` with a reason; only an outage (store, database) leaves the model `validating`
for the reconciler to re-send, and the model row counts the attempts: one that started
MCU_VALIDATION_MAX_ATTEMPTS times without a verdict (its worker died each time) ends `invalid` too.
A ready model's version 1 carries its test and train accuracy under the declared input transform and
preprocessing; the network is built for the transformed input shape.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import torch
from safetensors.torch import load_file
from sqlalchemy import select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import InterfaceError, OperationalError

from domain.architectures import check_architecture_kwargs
from domain.catalog import ModelState
from domain.problems import Problem, problem_type
from models import Dataset, Model, ModelVersion
from settings import Settings
from storage import StorageError, read_header
from unlearning.architectures import SMALL_ARCHITECTURES, count_parameters, model_input_channels
from unlearning.architectures import build_model as build_architecture
from unlearning.data import InputAdapter, Subset, seeded_generator
from unlearning.metrics import accuracy
from unlearning.transforms import InputTransform, model_input_shape
from worker import sandbox
from worker.inputs import load_dataset
from worker.services import Services

log = logging.getLogger(__name__)
MAX_NAMED = 20
NEAR_CHANCE = "accuracy near chance under the declared preprocessing: check it"
# An outage, not the model: the model stays `validating` and the reconciler sends it again.
OUTAGES = (StorageError, OSError, OperationalError, InterfaceError)


class InvalidModel(ValueError):
    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


# What a constructor raises for an unknown name or arguments it does not take (user input, not a fault).
BUILD_ERRORS = (TypeError, ValueError, RuntimeError, NotImplementedError, AttributeError)


def build(model: Model, input_shape: tuple[int, ...], settings: Settings) -> torch.nn.Module:
    """The architecture, freshly initialised, once its arguments are allowed and its parameter count, measured
    within the validation budget, is within the limit."""
    loc = [{"loc": ["architecture"], "msg": "cannot be built"}]
    try:
        check_architecture_kwargs(model.architecture_kwargs)
    except Problem as problem:
        raise InvalidModel(problem.detail, problem.errors) from None
    args = (model.architecture, model.num_classes, input_shape, model.architecture_kwargs)
    try:
        count = (count_parameters(*args) if model.architecture in SMALL_ARCHITECTURES  # the service's own code
                 else sandbox.count_parameters(*args, timeout_seconds=settings.validation_timeout_seconds,
                                               memory_bytes=settings.validation_memory_bytes))
    except BUILD_ERRORS as error:
        raise InvalidModel(f"{model.architecture} cannot be built: {sandbox.public_text(str(error))}", loc) from None
    if count > settings.max_model_parameters:
        raise InvalidModel(f"{model.architecture} with {model.num_classes} classes has {count:,} parameters; "
                           f"the limit is {settings.max_model_parameters:,} (MCU_MAX_MODEL_PARAMETERS)", loc)
    return build_architecture(*args)  # it built on the meta device within the budget: it builds here


def load_weights(network: torch.nn.Module, path: str, architecture: str, num_classes: int) -> None:
    """Raise naming missing/unexpected keys or shape mismatches; return when the weights load strictly."""
    header = read_header(path)
    expected = {k: tuple(v.shape) for k, v in network.state_dict().items()}
    errors = [{"loc": ["weights", k], "msg": "missing key"} for k in sorted(set(expected) - set(header))]
    errors += [{"loc": ["weights", k], "msg": "unexpected key"} for k in sorted(set(header) - set(expected))]
    errors += [{"loc": ["weights", k], "msg": f"shape {list(header[k].shape)}, expected {list(shape)}"}
               for k, shape in expected.items() if k in header and tuple(header[k].shape) != shape]
    if errors:
        shown = "; ".join(f"{e['loc'][1]}: {e['msg']}" for e in errors[:3])
        raise InvalidModel(f"weights do not fit {architecture} with {num_classes} classes ({len(errors)} problems: "
                           f"{shown}{' ...' if len(errors) > 3 else ''})", errors[:MAX_NAMED])
    tensors = load_file(path, device="cpu")
    broken = [name for name, tensor in sorted(tensors.items())
              if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if broken:  # it would only "diverge" in every job
        raise InvalidModel(f"weights hold NaN or infinite values in {len(broken)} tensors: "
                           f"{', '.join(broken[:3])}{' ...' if len(broken) > 3 else ''}",
                           [{"loc": ["weights", name], "msg": "NaN or infinite values"} for name in broken[:MAX_NAMED]])
    try:
        network.load_state_dict(tensors, strict=True)
    except (RuntimeError, ValueError) as error:
        detail = sandbox.public_text(str(error))
        raise InvalidModel(f"weights do not load into {architecture}: {detail}",
                           [{"loc": ["weights"], "msg": detail}]) from error


def input_adapter_note(architecture: str, data_channels: int, model_channels: int, stats: int) -> str:
    if stats not in (1, model_channels):
        raise InvalidModel(f"the preprocessing has {stats} values per statistic; {architecture} takes "
                           f"{model_channels}-channel input", [{"loc": ["preprocessing"], "msg": "channel count"}])
    if data_channels == model_channels:
        return f"{data_channels}-channel images scaled to [0, 1], then (x - mean) / std per channel"
    if data_channels == 1:
        return (f"grey images scaled to [0, 1], repeated to {model_channels} channels (the architecture takes "
                f"{model_channels}), then (x - mean) / std per channel")
    raise InvalidModel(f"{architecture} takes {model_channels}-channel input; the dataset's images have "
                       f"{data_channels} channels", [{"loc": ["architecture"], "msg": "channel count"}])


def validate_model(services: Services, model_id: str) -> None:
    claimed = _claim_attempt(services, model_id)
    if claimed is None:
        return  # validated already: a duplicate delivery changes nothing
    model, version, dataset_row, attempt = claimed
    try:
        if attempt > services.settings.validation_max_attempts:
            raise InvalidModel(f"validation did not finish: it started {attempt - 1} times and its worker stopped "
                               "each time (MCU_VALIDATION_MAX_ATTEMPTS)", [{"loc": ["architecture"],
                                                                          "msg": "validation did not finish"}])
        values, version_values = _examine(services, model, version, dataset_row)
    except OUTAGES:
        log.warning("validation of model %s interrupted by an outage; it will be sent again", model_id, exc_info=True)
        _uncount_attempt(services, model_id)
        return
    except Exception as error:  # whatever the model makes fail is the model's verdict
        if not isinstance(error, InvalidModel):
            log.warning("validation of model %s failed", model_id, exc_info=True)
            error = InvalidModel(f"validation failed: {sandbox.public_text(f'{type(error).__name__}: {error}')}")
        log.info("model %s is invalid: %s", model_id, error)
        _settle(services, model_id, {"state": ModelState.INVALID, "error": {
            "type": problem_type("invalid-model"), "title": "The model cannot be used as registered",
            "detail": str(error), "errors": error.errors}})
        return
    _settle(services, model_id, values, version_values)


def _claim_attempt(services: Services, model_id: str) -> tuple[Model, ModelVersion, Dataset, int] | None:
    """A validating model, its version 1 and dataset, and the number of this attempt (counted before anything
    can fail), or None when the model has its verdict."""
    with services.factory() as session, session.begin():
        model = session.get(Model, model_id)
        if model is None or model.state != ModelState.VALIDATING:
            return None
        version = session.scalar(select(ModelVersion).where(ModelVersion.model_id == model_id,
                                                            ModelVersion.version == 1))
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
            session.execute(update(Model).where(Model.id == model_id, Model.validation_attempts > 0)
                            .values(validation_attempts=Model.validation_attempts - 1))
    except OUTAGES:
        log.warning("could not uncount the interrupted validation of model %s", model_id)


def _examine(services: Services, model: Model, version: ModelVersion,
             dataset_row: Dataset) -> tuple[dict[str, Any], dict[str, Any]]:
    """The values of a `ready` model and its version 1; InvalidModel naming what is wrong otherwise."""
    transform = InputTransform.from_dict(model.input_transform)
    try:  # what the model sees: the stored images after its input transform
        input_shape = model_input_shape(dataset_row.input_shape, transform)
    except ValueError as error:
        raise InvalidModel(str(error), [{"loc": ["input_transform"], "msg": str(error)}]) from None
    # The cheap checks first: the dataset is loaded only for a model that can use it.
    network = build(model, input_shape, services.settings)
    load_weights(network, str(services.cache.path(version.storage_key, version.sha256)), model.architecture,
                 model.num_classes)
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
    metrics = {"test_accuracy": accuracy(network, test.sample(count, generator), adapter),
               "retain_accuracy": accuracy(network, train.sample(count, generator), adapter)}
    # "Near": within 10 points of chance, where a wrong preprocessing usually lands.
    warnings = [NEAR_CHANCE] if metrics["test_accuracy"] <= 1.0 / model.num_classes + 0.1 else []
    resolved = model.preprocessing | {"mean": list(dataset.normalization.mean), "std": list(dataset.normalization.std)}
    return ({"state": ModelState.READY, "error": None, "warnings": warnings, "preprocessing": resolved,
             "input_adapter": note}, {"metrics": metrics, "preprocessing": resolved})


def _settle(services: Services, model_id: str, values: dict[str, Any],
            version_values: dict[str, Any] | None = None) -> None:
    """The model's verdict and version 1's metrics in one transaction: never `ready` without them."""
    with services.factory() as session, session.begin():
        settled = cast(CursorResult[Any], session.execute(  # an UPDATE's result (typed as a plain Result)
            update(Model).where(Model.id == model_id, Model.state == ModelState.VALIDATING).values(**values)
        )).rowcount == 1
        if settled and version_values:
            session.execute(update(ModelVersion).where(ModelVersion.model_id == model_id, ModelVersion.version == 1)
                            .values(**version_values))
