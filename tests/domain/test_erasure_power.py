"""The criterion's statistical power (domain/erasure.py `power`): a forget set too small for the criterion to
tell an erased model from the original says so, instead of an unexplained "met" (issue 24: 20 random rows
published t = 0.01 with "erasure criterion met")."""

from __future__ import annotations

import pytest

from domain.erasure import judge, power

CRITERION = {"forget_tolerance": 0.05, "mia_tolerance": 0.1}
RANDOM_TARGETS = {"forget_accuracy": 0.95, "mia_efficacy": 0.5}  # θ_o's test accuracy; members ~ non-members
ORIGINAL_RANDOM = {"forget_accuracy": 1.0, "retain_accuracy": 1.0, "test_accuracy": 0.95, "mia_efficacy": 0.42}


def test_twenty_random_rows_cannot_decide_and_the_original_itself_passes() -> None:
    verdict = power(ORIGINAL_RANDOM, RANDOM_TARGETS, 20, CRITERION)
    assert judge(ORIGINAL_RANDOM, RANDOM_TARGETS, 20, CRITERION).met  # the check alone says "met" for θ_o ...
    assert verdict["decidable"] is False  # ... and power says why that shows nothing
    assert verdict["statement"].startswith("undecidable at 20 forget rows")
    forget = verdict["checks"]["forget_accuracy"]
    assert forget["detectable_difference"] == pytest.approx(0.05 + 2 * (0.95 * 0.05 / 20) ** 0.5, abs=1e-4)
    assert forget["original"] == 1.0 and forget["decidable"] is False


def test_many_random_rows_decide_once_the_original_fails_the_criterion() -> None:
    original = ORIGINAL_RANDOM | {"mia_efficacy": 0.1}  # an overfit θ_o: its members are easy to tell
    verdict = power(original, RANDOM_TARGETS, 5_000, CRITERION)
    assert verdict["decidable"] is True and not judge(original, RANDOM_TARGETS, 5_000, CRITERION).met
    assert verdict["checks"]["mia_efficacy"]["decidable"] and not verdict["checks"]["forget_accuracy"]["decidable"]


def test_a_forgotten_class_is_decidable_and_no_original_is_not() -> None:
    targets = {"forget_accuracy": 0.0, "mia_efficacy": 1.0}
    original = {"forget_accuracy": 0.99, "retain_accuracy": 0.99, "test_accuracy": 0.97, "mia_efficacy": 0.05}
    verdict = power(original, targets, 150, CRITERION)
    assert verdict["decidable"] and verdict["checks"]["forget_accuracy"]["detectable_difference"] == 0.05
    assert "detects a difference of 0.050" in verdict["statement"]
    assert power(None, targets, 150, CRITERION)["decidable"] is False  # nothing measured at t = 0: nothing shown


def test_a_job_without_an_mia_target_says_its_mia_is_not_judged() -> None:
    """Where θ_o's attack is a coin flip the worker derives no MIA target (unlearning/pipeline.py): the MIA check
    is then not applied, and the statement says so rather than leaving the check out unexplained."""
    targets = RANDOM_TARGETS | {"mia_efficacy": None}
    original = ORIGINAL_RANDOM | {"mia_efficacy": 0.1}  # would fail the MIA check if it had a target
    verdict = power(original, targets, 5_000, CRITERION)
    assert "mia_efficacy" not in verdict["checks"] and judge(original, targets, 5_000, CRITERION).met
    assert "MIA efficacy is not judged" in verdict["statement"]
    assert "not judged" not in power(original, RANDOM_TARGETS, 5_000, CRITERION)["statement"]
