"""Shared fixtures: sklearn digits and a cnn-small trained on it (seconds on a CPU)."""

import copy

import pytest
import torch

from unlearning import ImageDataset, load_digits_dataset, make_unlearning_data, train_classifier
from unlearning.architectures import seeded_init
from unlearning.data import Subset, UnlearningData

FORGET_CLASS = 3


@pytest.fixture(scope="session")
def digits() -> ImageDataset:
    return load_digits_dataset()


def _train_on_digits(digits: ImageDataset) -> torch.nn.Module:
    model = seeded_init("cnn-small", 10, digits.input_shape, seed=0)
    train = Subset(digits.train_inputs, digits.train_labels, torch.arange(len(digits.train_labels)))
    adapter = make_unlearning_data(digits, channels=1, forget_classes=[0]).adapter
    return train_classifier(model, train, adapter, epochs=20, lr=0.05, seed=0).eval()


@pytest.fixture(scope="session")
def _trained_cnn(digits: ImageDataset) -> torch.nn.Module:
    return _train_on_digits(digits)


@pytest.fixture
def original(_trained_cnn: torch.nn.Module) -> torch.nn.Module:
    """θ_o: a cnn-small trained on all digits (a fresh copy per test)."""
    return copy.deepcopy(_trained_cnn)


@pytest.fixture
def classwise(digits: ImageDataset) -> UnlearningData:
    return make_unlearning_data(digits, channels=1, forget_classes=[FORGET_CLASS])


@pytest.fixture
def random_forget(digits: ImageDataset) -> UnlearningData:
    """10% of the training set, chosen with a fixed seed."""
    n = len(digits.train_labels)
    indices = torch.randperm(n, generator=torch.Generator().manual_seed(1))[: n // 10]
    return make_unlearning_data(digits, channels=1, forget_indices=indices)


# Small, fast settings for curve runs in tests.
FAST = {"epochs": 3, "grid_points": 5}
