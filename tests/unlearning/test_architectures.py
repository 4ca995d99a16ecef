"""Architectures beyond the service's own: a timm model without BatchNorm, through the whole library path."""

from __future__ import annotations

import pytest
import torch

from unlearning import ImageDataset, make_unlearning_data, run_unlearning, train_classifier
from unlearning.architectures import (
    UnknownArchitecture,
    build_model,
    count_parameters,
    has_batchnorm,
    model_input_channels,
)
from unlearning.data import InputAdapter, Normalization, Subset
from unlearning.metrics import accuracy

TINY_VIT = {"img_size": 8, "patch_size": 4, "depth": 1, "embed_dim": 32, "num_heads": 2}


def test_a_timm_vit_without_batchnorm_unlearns_and_materializes(digits: ImageDataset) -> None:
    name = "timm:vit_tiny_patch16_224"
    channels = model_input_channels(name, 1, TINY_VIT)
    assert channels == 3  # grey digits are repeated to the 3 channels timm builds by default
    torch.manual_seed(0)
    model = build_model(name, 10, digits.input_shape, TINY_VIT)
    assert not has_batchnorm(model)
    unit = Normalization((0.0,), (1.0,))
    train = Subset(digits.train_inputs, digits.train_labels, torch.arange(len(digits.train_labels)))
    train_classifier(model, train, InputAdapter(unit, channels), epochs=8, lr=0.05, seed=0)
    dataset = ImageDataset(digits.train_inputs, digits.train_labels, digits.test_inputs, digits.test_labels, 10, unit)
    data = make_unlearning_data(dataset, channels=channels, forget_classes=[3])
    before = accuracy(model.eval(), data.test, data.adapter)
    assert before > 0.6, before  # it learned something, so forgetting is measurable

    config = {
        "epochs": 1,
        "grid_points": 3,
        "base": {"epochs": 2},
        "eval": {"retain_rows": 300, "test_rows": 300, "bn_samples": 300},
    }
    result = run_unlearning(model, data, "rl", config, device="cpu")
    state, metrics = result.materialize(1.0)
    # The published weights load back into a fresh instance and forget class 3 on the user's side.
    fresh = build_model(name, 10, digits.input_shape, TINY_VIT)
    fresh.load_state_dict(state)
    forget = Subset(data.forget.inputs, data.forget.labels, data.forget.ids)
    assert accuracy(fresh.eval(), forget, data.adapter) == pytest.approx(metrics.forget_accuracy, abs=0.02)
    assert metrics.forget_accuracy < 0.5


def test_parameters_are_counted_without_allocating() -> None:
    # 538 M parameters: counted on the meta device in well under a second, no memory taken.
    assert count_parameters("vgg11", 100_000, (3, 32, 32)) > 500_000_000
    assert count_parameters("cnn-small", 10, (1, 8, 8)) == sum(
        p.numel() for p in build_model("cnn-small", 10, (1, 8, 8)).parameters()
    )


def test_unknown_names_and_bad_arguments_are_refused() -> None:
    with pytest.raises(UnknownArchitecture, match="timm"):
        build_model("timm:no_such_model", 10, (3, 8, 8))
    with pytest.raises(ValueError, match="no constructor arguments"):
        build_model("cnn-small", 10, (1, 8, 8), {"width": 2})
