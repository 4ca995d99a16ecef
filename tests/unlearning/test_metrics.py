"""evaluate() on rows whose true-label confidence is set by construction: the model's logits are its input."""

import pytest
import torch
from torch import nn

from unlearning.data import InputAdapter, Normalization, Subset
from unlearning.metrics import EvalSets, evaluate

CLASSES = 3
IDENTITY = InputAdapter(Normalization((0.0,), (1.0,)), channels=1)


def _rows(n: int, scale: tuple[float, float], seed: int, wrong_every: int = 0) -> Subset:
    """Rows whose logits are `scale` (drawn uniformly in the range) at the true label and 0 elsewhere: a large
    scale is a confident, member-like row; a small one an unsure, non-member-like row. Every `wrong_every`-th
    row has the negated logit, so it is misclassified (and unsure)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % CLASSES
    low, high = scale
    magnitude = low + (high - low) * torch.rand(n, generator=generator)
    if wrong_every:
        magnitude[::wrong_every] *= -1
    inputs = torch.zeros(n, 1, 1, CLASSES)
    inputs[torch.arange(n), 0, 0, labels] = magnitude
    return Subset(inputs, labels, torch.arange(n))


MEMBER, NON_MEMBER = (6.0, 10.0), (0.2, 1.5)


@pytest.mark.parametrize(("forget_scale", "expected_mia"), [(NON_MEMBER, 1.0), (MEMBER, 0.0)],
                         ids=["forget-looks-unseen", "forget-looks-seen"])
def test_mia_efficacy_is_measured_on_the_forget_rows(forget_scale: tuple[float, float], expected_mia: float) -> None:
    retain, test = _rows(120, MEMBER, seed=0), _rows(120, NON_MEMBER, seed=1, wrong_every=4)
    forget = _rows(30, forget_scale, seed=2)
    sets = EvalSets(retain=retain, forget=forget, test=test, forgotten_class_test=None, bn=retain)
    metrics = evaluate(nn.Flatten(), sets, IDENTITY, batch_size=64)
    assert metrics.mia_efficacy == pytest.approx(expected_mia, abs=0.05)
    assert (metrics.retain_accuracy, metrics.forget_accuracy, metrics.test_accuracy) == (1.0, 1.0, 0.75)
    assert metrics.unlearning_accuracy == 0.0
