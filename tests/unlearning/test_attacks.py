"""The auditor's attacks (unlearning/attacks.py): each catches the model it exists to catch, on the rows it
claims to use."""

import copy

import pytest
import torch
from torch import nn

from domain.erasure import criterion_for, judge, power
from unlearning import train_classifier
from unlearning.architectures import seeded_init
from unlearning.attacks import feature_probe, relearning, run_attacks
from unlearning.config import EvidenceConfig
from unlearning.data import Subset, UnlearningData
from unlearning.metrics import accuracy

from .conftest import FORGET_CLASS

CHECKS = EvidenceConfig(relearn_steps=40, relearn_retain_rows=600, eval_rows=400)
CRITERION = {
    "forget_tolerance": 0.05,
    "mia_tolerance": 0.1,
    "relearn_tolerance": 0.05,
    "membership_tolerance": 0.05,
    "require_relearning": False,
    "require_membership": False,
    "undecidable": "publish",
}


def _relabelled(data: UnlearningData) -> UnlearningData:
    """The same rows with every forget row's label moved to the next class: a check that trains or fits on forget
    rows learns these labels; one that does not scores about 0 on them."""
    wrong = (data.forget.labels + 1) % data.num_classes
    forget = Subset(data.forget.inputs, wrong, data.forget.ids, data.forget.device)
    return UnlearningData(data.retain, forget, data.test, data.num_classes, data.adapter, data.forget_classes)


@pytest.fixture(scope="module")
def retrained(digits) -> tuple[nn.Module, UnlearningData]:
    """A cnn-small trained, as θ_o was, on the retain rows of a random 10% forget set only."""
    from unlearning import make_unlearning_data

    n = len(digits.train_labels)
    forget = torch.randperm(n, generator=torch.Generator().manual_seed(1))[: n // 10]
    data = make_unlearning_data(digits, channels=1, forget_indices=forget)
    model = seeded_init("cnn-small", 10, digits.input_shape, seed=0)
    return train_classifier(model, data.retain, data.adapter, epochs=20, lr=0.05, seed=0).eval(), data


@pytest.fixture(scope="module")
def retrained_without_class(digits) -> tuple[nn.Module, UnlearningData]:
    """A cnn-small that never saw FORGET_CLASS."""
    from unlearning import make_unlearning_data

    data = make_unlearning_data(digits, channels=1, forget_classes=[FORGET_CLASS])
    model = seeded_init("cnn-small", 10, digits.input_shape, seed=0)
    return train_classifier(model, data.retain, data.adapter, epochs=20, lr=0.05, seed=0).eval(), data


def test_relearning_tracks_forget_accuracy_from_where_the_model_starts(retrained, original) -> None:
    model, data = retrained
    result = relearning({"retrained": model, "original": original}, data, CHECKS, seed=0)
    assert result["protocol"]["retain_rows"] == 600 and "k_shot" not in result  # random forgetting: no shots
    for label, start in (("retrained", model), ("original", original)):
        curve = result["retain_only"][label]
        assert curve["steps"] == [0, 10, 20, 40]
        assert curve["forget_accuracy"][0] == pytest.approx(accuracy(start, data.forget, data.adapter), abs=1e-4)
    # The original keeps what it memorised; the retrained model stays near its accuracy on unseen rows.
    assert result["retain_only"]["original"]["forget_accuracy"][-1] >= 0.97
    unseen = accuracy(model, data.test, data.adapter)
    assert result["retain_only"]["retrained"]["forget_accuracy"][-1] == pytest.approx(unseen, abs=0.05)
    assert accuracy(model, data.forget, data.adapter) == pytest.approx(
        result["retain_only"]["retrained"]["forget_accuracy"][0], abs=1e-4
    )  # the check fine-tunes a copy


def test_relearning_never_trains_on_the_rows_it_measures(retrained) -> None:
    model, data = retrained
    curve = relearning({"m": model}, _relabelled(data), CHECKS, seed=0)["retain_only"]["m"]["forget_accuracy"]
    assert max(curve) < 0.1  # trained on retain rows only: the forget rows' moved labels are never learned


def test_relearning_is_a_criterion_that_fails_the_original_and_passes_the_retrained(
    retrained_without_class, original
) -> None:
    model, data = retrained_without_class
    evidence = relearning({"published": original, "original": original}, data, CHECKS, seed=0)
    criterion = criterion_for({"require_relearning": True}, CRITERION)
    targets = {"forget_accuracy": 0.0, "mia_efficacy": None}  # class-wise: a model that never saw the class
    as_published = {"forget_accuracy": 0.0, "mia_efficacy": 1.0, "evidence": {"relearning": evidence}}
    verdict = judge(as_published, targets, len(data.forget), criterion)
    assert not verdict.met and "after relearning" in verdict.reasons[0]
    strength = power(
        {"forget_accuracy": 1.0, "mia_efficacy": 0.0}, targets, len(data.forget), criterion, {"relearning": evidence}
    )
    assert strength["checks"]["relearned_forget_accuracy"]["decidable"] is True

    retrained_evidence = relearning({"published": model}, data, CHECKS, seed=0)
    assert retrained_evidence["retain_only"]["published"]["forget_accuracy"][-1] <= 0.02
    as_published["evidence"] = {"relearning": retrained_evidence}
    assert judge(as_published, targets, len(data.forget), criterion).met
    # Not required: the same evidence decides nothing.
    assert judge(as_published | {"evidence": {"relearning": evidence}}, targets, len(data.forget), CRITERION).met
    # Required but not measured yet (a selection's estimate): left to materialisation, not decided either way.
    assert power(None, targets, len(data.forget), criterion)["decidable"] is None


def test_k_shot_relearning_measures_only_the_forget_rows_it_did_not_train_on(original, classwise) -> None:
    result = relearning({"original": original}, classwise, CHECKS, seed=0)
    measured = result["protocol"]["forget_rows_measured"]
    assert result["protocol"]["shots_per_class"] == 5
    assert measured == {"retain_only": min(400, len(classwise.forget)), "k_shot": min(400, len(classwise.forget) - 5)}
    assert result["k_shot"]["original"]["steps"] == result["retain_only"]["original"]["steps"]


def test_the_probe_finds_a_class_only_the_head_forgot(original, classwise) -> None:
    head_only = copy.deepcopy(original)
    with torch.no_grad():
        head_only[-1].bias[FORGET_CLASS] -= 1000.0  # the class can never win: forgotten by the head alone
    probe = feature_probe(head_only, classwise, CHECKS, seed=0)
    assert probe["model_forget_accuracy"] == 0.0
    assert probe["forget_accuracy"] >= 0.8  # the features still tell the class apart
    assert probe["rows"]["forget"] == min(400, len(classwise.forget)) and probe["rows"]["test"] > 0


def test_the_probe_is_fit_on_test_rows_never_on_forget_rows(original, random_forget) -> None:
    probe = feature_probe(original, _relabelled(random_forget), CHECKS, seed=0)
    assert probe["forget_accuracy"] < 0.1  # a probe fit on forget rows would have learned the moved labels
    assert probe["test_accuracy"] >= 0.8


def test_every_check_runs_on_every_model_and_repeats_for_a_seed(original, classwise) -> None:
    checks = EvidenceConfig(relearn_steps=8, relearn_retain_rows=200, eval_rows=100)
    models = {"published": original, "original": original}
    first = run_attacks(models, classwise, checks, seed=3)
    assert set(first) == {"relearning", "feature_probe"}
    assert set(first["feature_probe"]) == {"published", "original"}
    assert run_attacks(models, classwise, checks, seed=3) == first
    off = EvidenceConfig(relearn_steps=0, probe=False)
    assert run_attacks(models, classwise, off, seed=3) == {}
