"""bench.summary: tables merged from several runs, confidence intervals over seeds, the per-cell criterion."""

import json
import math
from pathlib import Path

import pytest

from bench.summary import Cell, Spread, cells, goals, tables


def _row(gap: float, ua: float = 0.1) -> dict:
    return {"UA": ua, "RA": 0.9, "TA": 0.9, "avg_gap": gap, "oracle_gap": gap / 2, "published_rule_gap": gap}


def _write(path: Path, seeds: list[int], per_seed: list[dict]) -> Path:
    setting = {"dataset": "fashion", "scenario": "classwise", "architecture": "cnn-small", "augmentation": "crop_flip"}
    path.write_text(json.dumps(setting | {"seeds": seeds, "per_seed": per_seed}))
    return path


def test_spread_is_a_student_t_interval_over_seeds() -> None:
    spread = Spread.of([1.0, 2.0, 3.0])
    assert spread.mean == 2.0
    assert spread.std_error == pytest.approx(1 / math.sqrt(3))
    assert spread.half_width == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)  # t(0.975, 2 d.f.)
    assert Spread.of([0.7]).half_width == 0.0


def test_runs_of_one_table_are_merged_and_each_cell_judged_against_its_base(tmp_path: Path) -> None:
    retrain = {"UA": 1.0, "RA": 0.9, "TA": 0.9, "avg_gap": 0.0}
    first = _write(
        tmp_path / "a.json",
        [0, 1],
        [{"retrain": retrain, "rl": _row(1.0), "mcu(rl)": _row(0.2, ua=0.9)} for _ in range(2)],
    )
    second = _write(
        tmp_path / "b.json",
        [0, 1],
        [
            {"retrain": retrain, "scrub": _row(0.5), "mcu(scrub)": _row(gap, ua=0.95)}
            for gap in (0.6, 0.8)  # worse than its base by more than the base's standard error (0)
        ],
    )
    merged = tables([first, second])
    assert list(merged) == ["fashion classwise cnn-small crop_flip"]
    judged = {c.base: c for c in cells(merged["fashion classwise cnn-small crop_flip"], "fashion classwise")}
    assert judged["rl"].within_base_error and not judged["scrub"].within_base_error
    assert judged["scrub"].mcu_gap.mean == pytest.approx(0.7)
    assert judged["rl"].mcu_tow.mean == pytest.approx(0.9)  # (1 − 0.1)·1·1 against the retrained model
    checked = {goal: met for goal, _, met in goals(list(judged.values()))}
    assert checked["MCU ≤ base + one standard error in every cell"] is False
    assert checked["Fashion-MNIST random: MCU with its best base ≤ 1.15 and ≤ 0.5× that base's gap (cnn-small)"] is None


def test_each_architecture_measured_on_a_fashion_table_gets_its_own_goal_line() -> None:
    def cell(table: str, base_gap: list[float], mcu_gap: list[float]) -> Cell:
        tow = Spread.of([0.99] * len(mcu_gap))
        return Cell(table, "rl", len(mcu_gap), Spread.of(base_gap), Spread.of(mcu_gap), tow, 0.5, 1.0)

    checked = {
        goal: met
        for goal, _, met in goals(
            [
                cell("fashion random cnn-small crop_flip", [8.0, 9.0, 10.0], [1.4, 1.5, 1.6]),  # over 1.15
                cell("fashion random timm:resnet10t crop_flip", [7.0, 7.5, 8.0], [0.8, 0.9, 1.0]),
                cell("fashion random50 timm:resnet10t crop_flip", [3.0, 3.0, 3.0], [2.0, 2.5, 3.0]),
            ]
        )
    }
    random = "Fashion-MNIST random: MCU with its best base ≤ 1.15 and ≤ 0.5× that base's gap"
    assert checked[f"{random} (cnn-small)"] is False and checked[f"{random} (timm:resnet10t)"] is True
    assert checked["Fashion-MNIST random50: MCU with its best base ≤ 2.65 (timm:resnet10t)"] is True
    assert checked["Fashion-MNIST random50: MCU with its best base ≤ 2.65 (cnn-small)"] is None  # not measured


def test_a_method_twice_in_one_table_or_other_seeds_is_refused(tmp_path: Path) -> None:
    rows = [{"retrain": {"UA": 1.0, "RA": 0.9, "TA": 0.9}, "rl": _row(1.0), "mcu(rl)": _row(0.2)}]
    one = _write(tmp_path / "a.json", [0], rows)
    with pytest.raises(SystemExit, match="already in"):
        tables([one, _write(tmp_path / "b.json", [0], rows)])
    with pytest.raises(SystemExit, match="seeds"):
        tables([one, _write(tmp_path / "c.json", [1], rows)])
