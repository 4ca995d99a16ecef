"""A registered model checked by a worker: `validating` → `ready` | `invalid`.

Building an architecture happens only here and in the jobs, never in the API process. The parameter count
is taken on the meta device first, so a deliberately huge architecture is refused before any allocation.
A ready model's version 1 carries its test and train accuracy under the declared preprocessing.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from safetensors.torch import load_file
from sqlalchemy import select, update

from domain.catalog import ModelState
from domain.problems import problem_type
from models import Dataset, Model, ModelVersion
from storage import read_header
from unlearning.architectures import build_model as build_architecture
from unlearning.architectures import count_parameters, model_input_channels
from unlearning.data import InputAdapter, Subset, seeded_generator
from unlearning.metrics import accuracy
from worker.inputs import load_dataset
from worker.services import Services

log = logging.getLogger(__name__)
MAX_NAMED = 20
NEAR_CHANCE = "accuracy near chance under the declared preprocessing: check it"


class InvalidModel(ValueError):
    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


# What a constructor raises for an unknown name or arguments it does not take (user input, not a fault).
BUILD_ERRORS = (TypeError, ValueError, RuntimeError, NotImplementedError, AttributeError)


def build(model: Model, input_shape: tuple[int, ...], max_parameters: int) -> torch.nn.Module:
    """The architecture, freshly initialised, once its parameter count is known to be within the limit."""
    loc = [{"loc": ["architecture"], "msg": "cannot be built"}]
    args = (model.architecture, model.num_classes, input_shape, model.architecture_kwargs)
    try:
        count = count_parameters(*args)
    except BUILD_ERRORS as error:
        raise InvalidModel(f"{model.architecture} cannot be built: {error}", loc) from error
    if count > max_parameters:
        raise InvalidModel(f"{model.architecture} with {model.num_classes} classes has {count:,} parameters; "
                           f"the limit is {max_parameters:,} (MCU_MAX_MODEL_PARAMETERS)", loc)
    return build_architecture(*args)  # it built on the meta device: it builds here


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
    try:
        network.load_state_dict(load_file(path, device="cpu"), strict=True)
    except (RuntimeError, ValueError) as error:
        raise InvalidModel(f"weights do not load into {architecture}: {error}",
                           [{"loc": ["weights"], "msg": str(error)}]) from error


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
    with services.factory() as session:
        model = session.get(Model, model_id)
        if model is None or model.state != ModelState.VALIDATING:
            return  # validated already: a duplicate delivery changes nothing
        version = session.scalar(select(ModelVersion).where(ModelVersion.model_id == model_id,
                                                            ModelVersion.version == 1))
        dataset_row = session.get(Dataset, model.dataset_id)
        assert version is not None and dataset_row is not None
    input_shape = tuple(dataset_row.input_shape)
    try:  # the cheap checks first: the dataset is loaded only for a model that can use it
        network = build(model, input_shape, services.settings.max_model_parameters)
        load_weights(network, str(services.cache.path(version.storage_key, version.sha256)), model.architecture,
                     model.num_classes)
        with services.factory() as session:
            dataset, _ = load_dataset(services, session, dataset_row, model.preprocessing)
        assert dataset.normalization is not None
        channels = model_input_channels(model.architecture, input_shape[0], model.architecture_kwargs)
        note = input_adapter_note(model.architecture, input_shape[0], channels, len(dataset.normalization.mean))
    except InvalidModel as error:
        log.info("model %s is invalid: %s", model_id, error)
        _settle(services, model_id, {"state": ModelState.INVALID, "error": {
            "type": problem_type("invalid-model"), "title": "The model cannot be used as registered",
            "detail": str(error), "errors": error.errors}})
        return
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
    _settle(services, model_id, {"state": ModelState.READY, "error": None, "warnings": warnings,
                                 "preprocessing": resolved, "input_adapter": note},
            version_values={"metrics": metrics, "preprocessing": resolved})


def _settle(services: Services, model_id: str, values: dict[str, Any],
            version_values: dict[str, Any] | None = None) -> None:
    """The model's verdict and version 1's metrics in one transaction: never `ready` without them."""
    with services.factory() as session, session.begin():
        settled = session.execute(update(Model).where(Model.id == model_id, Model.state == ModelState.VALIDATING)
                                  .values(**values)).rowcount == 1
        if settled and version_values:
            session.execute(update(ModelVersion).where(ModelVersion.model_id == model_id, ModelVersion.version == 1)
                            .values(**version_values))
