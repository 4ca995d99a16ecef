"""evaluate() on rows whose true-label confidence is set by construction: the model's logits are its input."""

import math

import pytest
import torch
from torch import nn

from unlearning.config import EvalConfig
from unlearning.data import InputAdapter, Normalization, Subset, make_unlearning_data
from unlearning.metrics import EvalSets, class_quotas, count, evaluate, stratified_sample

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


@pytest.mark.parametrize(
    ("forget_scale", "expected_mia"),
    [(NON_MEMBER, 1.0), (MEMBER, 0.0)],
    ids=["forget-looks-unseen", "forget-looks-seen"],
)
def test_mia_efficacy_is_measured_on_the_forget_rows(forget_scale: tuple[float, float], expected_mia: float) -> None:
    retain, test = _rows(120, MEMBER, seed=0), _rows(120, NON_MEMBER, seed=1, wrong_every=4)
    forget = _rows(30, forget_scale, seed=2)
    sets = EvalSets(retain=retain, forget=forget, test=test, forgotten_class_test=None, bn=retain)
    metrics = evaluate(nn.Flatten(), sets, IDENTITY, batch_size=64)
    assert metrics.mia_efficacy == pytest.approx(expected_mia, abs=0.05)
    assert (metrics.retain_accuracy, metrics.forget_accuracy, metrics.test_accuracy) == (1.0, 1.0, 0.75)
    assert metrics.unlearning_accuracy == 0.0


def test_std_errors_are_binomial_over_the_rows_each_metric_was_measured_on() -> None:
    retain, test, forget = (
        _rows(120, MEMBER, seed=0),
        _rows(80, NON_MEMBER, seed=1, wrong_every=4),
        _rows(30, (0.2, 10.0), seed=2, wrong_every=3),
    )  # some rows look seen, some unseen
    sets = EvalSets(retain=retain, forget=forget, test=test, forgotten_class_test=None, bn=retain)
    metrics = evaluate(nn.Flatten(), sets, IDENTITY, batch_size=64)
    assert metrics.rows == {"forget": 30, "retain": 120, "test": 80}
    se = metrics.std_errors
    assert se["test_accuracy"] == pytest.approx(math.sqrt(0.75 * 0.25 / 80))
    fa = metrics.forget_accuracy
    assert fa == pytest.approx(2 / 3) and se["forget_accuracy"] == pytest.approx(math.sqrt(fa * (1 - fa) / 30))
    assert se["unlearning_accuracy"] == se["forget_accuracy"] and se["retain_accuracy"] == 0.0
    mia = metrics.mia_efficacy
    assert 0 < mia < 1 and se["mia_efficacy"] == pytest.approx(math.sqrt(mia * (1 - mia) / 30))  # n: forget rows
    assert metrics.is_finite() and metrics.to_dict()["rows"] == metrics.rows


def _labelled(sizes: list[int]) -> Subset:
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(sizes)])
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]  # classes interleaved
    return Subset(torch.zeros(len(labels), 1, 1, 1), labels, torch.arange(len(labels)) + 1000)


def _per_class(subset: Subset, classes: int) -> list[int]:
    return torch.bincount(subset.labels, minlength=classes).tolist()


def test_stratified_samples_keep_class_shares_exactly_and_are_seeded() -> None:
    rows = _labelled([500, 300, 150, 50])
    sample = stratified_sample(rows, 100, torch.Generator().manual_seed(7))
    assert _per_class(sample, 4) == [50, 30, 15, 5] and len(set(sample.ids.tolist())) == 100
    assert set(sample.ids.tolist()) <= set(rows.ids.tolist())
    assert torch.equal(sample.labels, rows.labels[sample.ids - 1000])  # rows stay whole
    again = stratified_sample(rows, 100, torch.Generator().manual_seed(7))
    other = stratified_sample(rows, 100, torch.Generator().manual_seed(8))
    assert torch.equal(sample.ids, again.ids) and set(sample.ids.tolist()) != set(other.ids.tolist())
    assert len(set(sample.labels[:20].tolist())) > 1  # shuffled: a prefix (the MIA's members) mixes classes
    assert stratified_sample(rows, 1000, torch.Generator()) is rows  # the whole set when it has no more


@pytest.mark.parametrize(
    ("sizes", "count", "expected"),
    [
        ([7, 5, 1], 4, [2, 1, 1]),  # largest remainder gives [2, 2, 0]; class 2 takes one from the class most above
        ([7, 5, 1], 2, [1, 1, 0]),  # fewer rows than classes: largest remainders only
        ([3, 3, 3], 4, [2, 1, 1]),  # ties go to the lower class
        ([999, 1], 10, [9, 1]),
    ],
)
def test_class_quotas_sum_to_the_count_by_largest_remainder(sizes: list[int], count: int, expected: list[int]) -> None:
    assert class_quotas(sizes, count) == expected
    assert (
        _per_class(stratified_sample(_labelled(sizes), count, torch.Generator().manual_seed(0)), len(sizes)) == expected
    )


def test_full_sets_hold_every_row_and_train_the_attack_on_the_sample(digits) -> None:
    data = make_unlearning_data(digits, channels=1, forget_classes=[3])
    config = EvalConfig(retain_rows=200, test_rows=50, bn_samples=300)
    sampled = EvalSets.draw(data, config, seed=0)
    full = sampled.every_row(data)
    assert (len(sampled.retain), len(sampled.test), len(sampled.bn)) == (200, 50, 300)
    assert len(full.retain) == len(data.retain) and len(full.forget) == len(data.forget) == len(sampled.forget)
    assert len(full.test) + len(full.forgotten_class_test) == len(data.test)
    assert 3 not in full.test.labels.tolist()
    members, nonmembers = full.attack
    assert torch.equal(members.ids, sampled.retain.ids[:50]) and torch.equal(nonmembers.ids, sampled.test.ids)
    assert torch.equal(full.bn.ids, sampled.bn.ids)


@pytest.mark.parametrize("scenario", ["classwise", "random"])
def test_the_parts_of_a_full_set_measurement_add_up_to_the_whole_exactly(digits, original, scenario: str) -> None:
    """Parts cut at batch boundaries (worker/grid.py shares the recommended point this way): summed counts give
    the whole's metrics bit for bit, whatever the number of parts, with parts that hold no forget rows at all."""
    forget = {"forget_classes": [3]} if scenario == "classwise" else {"forget_indices": torch.arange(0, 1400, 10)}
    data = make_unlearning_data(digits, channels=1, **forget)
    full = EvalSets.draw(data, EvalConfig(retain_rows=200, test_rows=50), seed=0).every_row(data)
    model = original.eval()
    whole = count(model, full, data.adapter, batch_size=64, t=0.5)
    assert whole.metrics() == evaluate(model, full, data.adapter, batch_size=64, t=0.5)
    for parts in (2, 3, 7):
        shares = [full.share(part, parts, batch_size=64) for part in range(parts)]
        for split in ("retain", "forget", "test"):
            ids = torch.cat([getattr(share, split).ids for share in shares])
            assert torch.equal(ids, getattr(full, split).ids)  # every row once, in order
            assert all(len(getattr(share, split)) % 64 == 0 for share in shares[:-1] if len(getattr(share, split)))
        counted = [count(model, share, data.adapter, batch_size=64, t=0.5) for share in shares]
        if parts == 7:  # the forget rows fill fewer batches than there are parts
            assert any(c.rows["forget"] == 0 for c in counted)
        assert sum(counted[1:], counted[0]).metrics() == whole.metrics(), parts
    with pytest.raises(ValueError, match="full-set"):
        EvalSets.draw(data, EvalConfig(), seed=0).share(0, 2, batch_size=64)
