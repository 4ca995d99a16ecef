"""Model architectures by name: torchvision classifiers, `timm:<name>` models of the timm library, and
two small ones for tests and benchmarks, each with optional constructor arguments.

Input channels: torchvision and timm classifiers take 3-channel images (timm: unless `in_chans` is
given). They are built unchanged (so standard state_dicts load into them) and a 1-channel dataset is
repeated to 3 channels by the input adapter (`data.InputAdapter`), not by changing the first layer. The
small architectures take the dataset's own channel count.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torchvision
from torch import nn

SMALL_ARCHITECTURES = ("mlp", "cnn-small")
TIMM_PREFIX = "timm:"


class UnknownArchitecture(ValueError):
    pass


def _mlp(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), 256),
        nn.ReLU(),
        nn.Linear(256, 128),
        nn.ReLU(),
        nn.Linear(128, num_classes),
    )


def _cnn_small(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    channels = input_shape[0]
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(32 * 16, 128),
        nn.ReLU(),
        nn.Linear(128, num_classes),
    )


def torchvision_architectures() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def model_input_channels(name: str, data_channels: int, kwargs: dict[str, Any] | None = None) -> int:
    """The channel count the architecture's first layer expects for data with `data_channels`."""
    if name in SMALL_ARCHITECTURES:
        return data_channels
    if name.startswith(TIMM_PREFIX):
        return int((kwargs or {}).get("in_chans", 3))
    return 3


def check_name(name: str) -> None:
    """UnknownArchitecture unless `name` is one of ours, a torchvision classifier or a timm model: a look-up,
    nothing is built (so a misspelled name needs no sandbox)."""
    if name in SMALL_ARCHITECTURES:
        return
    if name.startswith(TIMM_PREFIX):
        import timm  # only workers that serve timm models pay for importing it

        timm_name = name.removeprefix(TIMM_PREFIX)
        if not timm.is_model(timm_name):
            raise UnknownArchitecture(f"unknown timm architecture {timm_name!r} (see timm.list_models())")
    elif name not in torchvision_architectures():
        raise UnknownArchitecture(
            f"unknown architecture {name!r}: use one of {list(SMALL_ARCHITECTURES)}, a torchvision classification "
            "model name such as 'resnet18', or 'timm:<name>'"
        )


def build_model(
    name: str, num_classes: int, input_shape: tuple[int, ...], kwargs: dict[str, Any] | None = None
) -> nn.Module:
    """A freshly initialised classifier (never pretrained weights). `input_shape` is the dataset's (C, H, W);
    `kwargs` go to the constructor. Inside `torch.device("meta")` nothing is allocated (see `count_parameters`)."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    kwargs = dict(kwargs or {})
    if name in SMALL_ARCHITECTURES:
        if kwargs:
            raise ValueError(f"{name} takes no constructor arguments, got {sorted(kwargs)}")
        return (_mlp if name == "mlp" else _cnn_small)(num_classes, tuple(input_shape))
    check_name(name)
    if name.startswith(TIMM_PREFIX):
        import timm

        return timm.create_model(name.removeprefix(TIMM_PREFIX), pretrained=False, num_classes=num_classes, **kwargs)
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    if getattr(model, "aux_logits", False):  # inception/googlenet: one output, not a tuple
        model.aux_logits = False
        for aux in ("AuxLogits", "aux1", "aux2"):
            if hasattr(model, aux):
                setattr(model, aux, None)
    return model


def count_parameters(
    name: str, num_classes: int, input_shape: tuple[int, ...], kwargs: dict[str, Any] | None = None
) -> int:
    """The architecture's parameter count, built on the meta device: no memory is allocated for weights."""
    with torch.device("meta"):
        return parameter_count(build_model(name, num_classes, input_shape, kwargs))


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def seeded_init(
    name: str, num_classes: int, input_shape: tuple[int, ...], seed: int, kwargs: dict[str, Any] | None = None
) -> nn.Module:
    """`build_model` with a reproducible initialisation."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(name, num_classes, input_shape, kwargs)
