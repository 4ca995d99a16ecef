"""`mcu requests curve` (and the demo) print a curve an operator can read in an 80-column terminal: every
metric named for what it measures (issue 26: a class request's "test accuracy" left out the forgotten class
without saying so), the effective region in words, and a chart whose overlapping letters are explained."""

from __future__ import annotations

import pytest
from rich.console import Console

from cli import client_commands
from mcu_client.types import Curve, CurvePoint


def curve(classwise: bool, mia_target: float | None = 0.5) -> Curve:
    points = [
        CurvePoint(
            t=t,
            forget_accuracy=0.98 - 0.9 * t,
            unlearning_accuracy=0.02 + 0.9 * t,
            retain_accuracy=0.99 - 0.05 * t,
            test_accuracy=0.97 - 0.04 * t,
            mia_efficacy=0.1 + 0.5 * t,
            forgotten_class_test_accuracy=0.95 - 0.9 * t if classwise else None,
            rows={"forget": 178, "retain": 1000, "test": 1000},
        )
        for t in (0.0, 0.25, 0.5, 0.75, 1.0)
    ]
    return Curve(
        points=points,
        recommended_t=0.63,
        effective_region=[[0.5, 0.75]],
        targets={"forget_accuracy": 0.1, "retain_accuracy": 0.99, "test_accuracy": 0.97, "mia_efficacy": mia_target},
    )


@pytest.fixture
def printed(monkeypatch: pytest.MonkeyPatch) -> Console:
    terminal = Console(width=80, force_terminal=True, no_color=True, record=True)
    monkeypatch.setattr(client_commands, "console", terminal)  # the command's own output, in an 80-column terminal
    return terminal


@pytest.mark.parametrize("classwise", [False, True], ids=["random", "class-wise"])
def test_the_curve_fits_80_columns_and_names_what_each_metric_measures(printed: Console, classwise: bool) -> None:
    client_commands.print_curve(curve(classwise), "the curve")
    text = printed.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80, text
    recommended = [line for line in text.splitlines() if "← recommended" in line]
    assert len(recommended) == 1 and recommended[0].startswith("│ 0.75"), text  # nearest to t = 0.63
    words = " ".join(text.split())  # the terminal wraps long sentences
    assert ("retained classes' test rows only" in words) is classwise
    header = next(line for line in text.splitlines() if line.startswith("┃ t"))
    assert ("forgotten" in header) is classwise and ("test*" in header) is classwise  # a column of its own
    assert "effective region (= under the chart): t 0.50–0.75, where the points come nearer the targets" in words
    assert "* several" in text  # the chart's legend explains where letters overlap
    assert "MIA has no target" not in words


def test_a_curve_without_an_mia_target_says_why(printed: Console) -> None:
    client_commands.print_curve(curve(classwise=False, mia_target=None), "the curve")
    words = " ".join(printed.export_text().split())
    assert "MIA has no target (the original model's attack is a coin flip on these rows" in words
    assert "neither the recommended t nor the erasure criterion uses it" in words
