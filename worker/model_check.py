"""The first stage of a model's validation (worker/validation.py): whether the registered model can run at all.

Its architecture arguments are checked first (domain/architectures.py: no files, downloads or devices), then a
foreign constructor (timm, torchvision) counts its parameters on the meta device in a child process with a
time and memory budget (worker/sandbox.py), so a deliberately huge or hostile architecture is refused before
any allocation here. Then the network is built for the shape the model sees (the dataset's stored shape after
the input transform), the weights load strictly (names, shapes, finite values), the declared preprocessing
fits its input channels, and one small batch of that shape goes through it. All on the CPU and without the
dataset's rows: it runs on the control queue, beside a worker's job, so a misspelled architecture or weights
of another model are `invalid` within seconds even while every GPU worker trains.
"""

from __future__ import annotations

from typing import Any

import torch
from safetensors.torch import load_file

from domain.architectures import check_architecture_kwargs
from domain.problems import Problem
from models import Dataset, Model, ModelVersion
from settings import Settings
from storage import read_header
from unlearning.architectures import SMALL_ARCHITECTURES, check_name, count_parameters, model_input_channels
from unlearning.architectures import build_model as build_architecture
from unlearning.data import InputAdapter, Normalization
from unlearning.transforms import InputTransform, model_input_shape
from worker import sandbox
from worker.services import Services

MAX_NAMED = 20
PROBE_BATCH = 2  # rows of the one forward pass: enough for layers that need more than one


class InvalidModel(ValueError):
    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


# What a constructor raises for an unknown name or arguments it does not take (user input, not a fault).
BUILD_ERRORS = (TypeError, ValueError, RuntimeError, NotImplementedError, AttributeError)


def check(services: Services, model: Model, version: ModelVersion, dataset_row: Dataset) -> None:
    """Return when the model builds, loads its weights and runs on a batch of its input; InvalidModel naming
    what is wrong otherwise."""
    shape = model_shape(model, dataset_row)
    network = build(model, shape, services.settings)
    load_weights(
        network, str(services.cache.path(version.storage_key, version.sha256)), model.architecture, model.num_classes
    )
    channels = model_input_channels(model.architecture, shape[0], model.architecture_kwargs)
    mean, std = model.preprocessing["mean"], model.preprocessing["std"]
    if mean is None:  # the "dataset" preset, fitted on the train split by the measurement: a value per channel
        mean, std = [0.0] * shape[0], [1.0] * shape[0]
    input_adapter_note(model.architecture, shape[0], channels, len(mean))
    adapter = InputAdapter(Normalization(tuple(mean), tuple(std)), channels)
    network.eval()
    try:
        with torch.inference_mode():
            logits = network(adapter(torch.full((PROBE_BATCH, *shape), 0.5)))
    except BUILD_ERRORS as error:
        detail = sandbox.public_text(f"{type(error).__name__}: {error}")
        raise InvalidModel(
            f"{model.architecture} fails on {channels}x{shape[1]}x{shape[2]} input: {detail}",
            [{"loc": ["architecture"], "msg": "fails on the model's input shape"}],
        ) from None
    got = list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
    if got != [PROBE_BATCH, model.num_classes]:
        raise InvalidModel(
            f"{model.architecture} gives {got} for a batch of {PROBE_BATCH}, not "
            f"[{PROBE_BATCH}, {model.num_classes}] class scores",
            [{"loc": ["architecture"], "msg": "output is not one score per class"}],
        )


def model_shape(model: Model, dataset_row: Dataset) -> tuple[int, int, int]:
    """What the model sees: the stored images after its input transform."""
    transform = InputTransform.from_dict(model.input_transform)
    try:
        return model_input_shape(dataset_row.input_shape, transform)
    except ValueError as error:
        raise InvalidModel(str(error), [{"loc": ["input_transform"], "msg": str(error)}]) from None


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
        check_name(model.architecture)  # a misspelled name needs no sandbox
        count = (
            count_parameters(*args)
            if model.architecture in SMALL_ARCHITECTURES  # the service's own code
            else sandbox.count_parameters(
                *args,
                timeout_seconds=settings.validation_timeout_seconds,
                memory_bytes=settings.validation_memory_bytes,
            )
        )
    except BUILD_ERRORS as error:
        raise InvalidModel(f"{model.architecture} cannot be built: {sandbox.public_text(str(error))}", loc) from None
    if count > settings.max_model_parameters:
        raise InvalidModel(
            f"{model.architecture} with {model.num_classes} classes has {count:,} parameters; "
            f"the limit is {settings.max_model_parameters:,} (MCU_MAX_MODEL_PARAMETERS)",
            loc,
        )
    return build_architecture(*args)  # it built on the meta device within the budget: it builds here


def load_weights(network: torch.nn.Module, path: str, architecture: str, num_classes: int) -> None:
    """Raise naming missing/unexpected keys or shape mismatches; return when the weights load strictly."""
    header = read_header(path)
    expected = {k: tuple(v.shape) for k, v in network.state_dict().items()}
    errors = [{"loc": ["weights", k], "msg": "missing key"} for k in sorted(set(expected) - set(header))]
    errors += [{"loc": ["weights", k], "msg": "unexpected key"} for k in sorted(set(header) - set(expected))]
    errors += [
        {"loc": ["weights", k], "msg": f"shape {list(header[k].shape)}, expected {list(shape)}"}
        for k, shape in expected.items()
        if k in header and tuple(header[k].shape) != shape
    ]
    if errors:
        shown = "; ".join(f"{e['loc'][1]}: {e['msg']}" for e in errors[:3])
        raise InvalidModel(
            f"weights do not fit {architecture} with {num_classes} classes ({len(errors)} problems: "
            f"{shown}{' ...' if len(errors) > 3 else ''})",
            errors[:MAX_NAMED],
        )
    tensors = load_file(path, device="cpu")
    broken = [
        name
        for name, tensor in sorted(tensors.items())
        if tensor.is_floating_point() and not torch.isfinite(tensor).all()
    ]
    if broken:  # it would only "diverge" in every job
        raise InvalidModel(
            f"weights hold NaN or infinite values in {len(broken)} tensors: "
            f"{', '.join(broken[:3])}{' ...' if len(broken) > 3 else ''}",
            [{"loc": ["weights", name], "msg": "NaN or infinite values"} for name in broken[:MAX_NAMED]],
        )
    try:
        network.load_state_dict(tensors, strict=True)
    except (RuntimeError, ValueError) as error:
        detail = sandbox.public_text(str(error))
        raise InvalidModel(
            f"weights do not load into {architecture}: {detail}", [{"loc": ["weights"], "msg": detail}]
        ) from error


def input_adapter_note(architecture: str, data_channels: int, model_channels: int, stats: int) -> str:
    if stats not in (1, model_channels):
        raise InvalidModel(
            f"the preprocessing has {stats} values per statistic; {architecture} takes {model_channels}-channel input",
            [{"loc": ["preprocessing"], "msg": "channel count"}],
        )
    if data_channels == model_channels:
        return f"{data_channels}-channel images scaled to [0, 1], then (x - mean) / std per channel"
    if data_channels == 1:
        return (
            f"grey images scaled to [0, 1], repeated to {model_channels} channels (the architecture takes "
            f"{model_channels}), then (x - mean) / std per channel"
        )
    raise InvalidModel(
        f"{architecture} takes {model_channels}-channel input; the dataset's images have {data_channels} channels",
        [{"loc": ["architecture"], "msg": "channel count"}],
    )
