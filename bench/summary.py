"""The base → MCU summary over quality results: one cell per (table, base method), goals checked.

    python -m bench.summary docs/results/quality-mnist5k-random.json docs/results/quality-fashion-random.json ...
    python -m bench.summary FILES --json docs/results/summary.json

A table is one (dataset, scenario, architecture, augmentation); files of the same table on the same seeds add
their methods to it (e.g. a later run of new base methods, on any device, from the same cached θ_o). Per cell: the
base method's Avg. Gap and MCU's at its recommended t, each mean over seeds with a 95% confidence interval
(Student's t, seeds − 1 degrees of freedom), MCU's ToW with its interval, the best measured point's gap (an oracle
that knows the retrained model), and whether MCU ≤ base + one standard error of the base's gap over seeds. Then
each goal of docs/benchmarks.md (issue 23) as met, not met or not measured; the last line sums them up.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from bench.common import markdown_table, write_json


@dataclass(frozen=True)
class Spread:
    """A per-seed value's mean, standard error and 95% confidence half-width (0 with a single seed)."""

    mean: float
    std_error: float
    half_width: float

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        n = len(values)
        if n < 2:
            return cls(float(values[0]), 0.0, 0.0)
        std_error = float(np.std(values, ddof=1)) / math.sqrt(n)
        return cls(float(np.mean(values)), std_error, float(stats.t.ppf(0.975, n - 1)) * std_error)

    def __str__(self) -> str:
        return f"{self.mean:.2f} [{self.mean - self.half_width:.2f}, {self.mean + self.half_width:.2f}]"


@dataclass(frozen=True)
class Cell:
    table: str
    base: str
    seeds: int
    base_gap: Spread
    mcu_gap: Spread
    mcu_tow: Spread
    oracle_gap: float
    published_rule_gap: float

    @property
    def within_base_error(self) -> bool:
        return self.mcu_gap.mean <= self.base_gap.mean + self.base_gap.std_error


def tables(paths: list[Path]) -> dict[str, list[dict[str, dict[str, Any]]]]:
    """Per-seed rows of each table, files of one table merged method by method (same seeds required)."""
    merged: dict[str, list[dict[str, dict[str, Any]]]] = {}
    seeds: dict[str, list[int]] = {}
    for path in paths:
        payload = json.loads(path.read_text())
        augmentation = payload.get("augmentation") or "none"
        architecture = payload.get("architecture", "cnn-small")  # files from before the option: cnn-small
        name = f"{payload['dataset']} {payload['scenario']} {architecture} {augmentation}"
        if name not in merged:
            merged[name], seeds[name] = [dict(rows) for rows in payload["per_seed"]], payload["seeds"]
            continue
        if payload["seeds"] != seeds[name]:
            raise SystemExit(f"{path}: seeds {payload['seeds']}, but {name} has {seeds[name]}")
        for into, rows in zip(merged[name], payload["per_seed"], strict=True):
            repeated = {m for m in rows if m not in ("retrain", "_diverged") and m in into}
            if repeated:
                raise SystemExit(f"{path}: {sorted(repeated)} already in {name}")
            diverged = into.get("_diverged", []) + rows.get("_diverged", [])
            into.update(
                {m: r for m, r in rows.items() if m != "retrain"} | ({"_diverged": diverged} if diverged else {})
            )
    return merged


def tow(row: dict[str, Any], retrain: dict[str, Any]) -> float:
    """Tug of war (docs/algorithm.md §6): ∏(1 − |Δacc|) over forget (|ΔUA| = |ΔFA|), retain and test accuracy of a
    bench.quality row against the retrained model's; 1: the retrained model."""
    return float(np.prod([1 - abs(row[k] - retrain[k]) for k in ("UA", "RA", "TA")]))


def run_tow(row: dict[str, Any], retrain: dict[str, Any]) -> float:
    """The row's ToW against its own run's retrained model, as bench.quality stored it; files from before the column
    lack it, and then `retrain` (in a merged table, the first file's) stands in."""
    return row["tow"] if "tow" in row else tow(row, retrain)


def cells(per_seed: list[dict[str, dict[str, Any]]], table: str) -> list[Cell]:
    def spread(method: str, key: str) -> Spread:
        return Spread.of([rows[method][key] for rows in per_seed])

    bases = [  # every seed's (a run cut short has the first methods only)
        m
        for m in per_seed[0]
        if not m.startswith(("_", "mcu(")) and all(m in rows and f"mcu({m})" in rows for rows in per_seed)
    ]
    return [
        Cell(
            table,
            base,
            len(per_seed),
            spread(base, "avg_gap"),
            spread(f"mcu({base})", "avg_gap"),
            Spread.of([run_tow(rows[f"mcu({base})"], rows["retrain"]) for rows in per_seed]),
            spread(f"mcu({base})", "oracle_gap").mean,
            spread(f"mcu({base})", "published_rule_gap").mean,
        )
        for base in bases
    ]


def goals(all_cells: list[Cell]) -> list[tuple[str, str, bool | None]]:
    """(goal, measured, met: None when its table was not among the files)."""
    by_table: dict[str, list[Cell]] = {}
    for cell in all_cells:
        by_table.setdefault(cell.table, []).append(cell)
    out: list[tuple[str, str, bool | None]] = []
    for scenario, limit in (("random", 1.15), ("random50", 2.65), ("classwise", 0.3)):
        goal = f"Fashion-MNIST {scenario}: MCU with its best base ≤ {limit}" + (
            " and ≤ 0.5× that base's gap" if scenario == "random" else ""
        )
        # one line per architecture measured ("fashion random timm:resnet10t crop_flip"), cnn-small's always
        tables = sorted(
            {t for t in by_table if t.startswith(f"fashion {scenario} ")} | {f"fashion {scenario} cnn-small crop_flip"}
        )
        for table in tables:
            named = f"{goal} ({table.split()[2]})"
            if table not in by_table:
                out.append((named, "not measured", None))
                continue
            best = min(by_table[table], key=lambda c: c.mcu_gap.mean)
            met = best.mcu_gap.mean <= limit and (scenario != "random" or best.mcu_gap.mean <= 0.5 * best.base_gap.mean)
            measured = f"mcu({best.base}) {best.mcu_gap} (base {best.base_gap.mean:.2f}; {best.seeds} seeds)"
            out.append((named, measured, met))
    goal = "MNIST-5k random rl: oracle ≤ 0.45, recommended ≤ 0.55"
    rl = next((c for c in by_table.get("mnist5k random cnn-small none", []) if c.base == "rl"), None)
    if rl is None:
        out.append((goal, "not measured", None))
    else:
        measured = f"oracle {rl.oracle_gap:.2f}, recommended {rl.mcu_gap}"
        out.append((goal, measured, rl.oracle_gap <= 0.45 and rl.mcu_gap.mean <= 0.55))
    distance = float(np.mean([c.mcu_gap.mean - c.oracle_gap for c in all_cells]))
    out.append(("recommended − oracle ≤ 0.1 on average over all cells", f"{distance:.3f}", distance <= 0.1))
    within = sum(c.within_base_error for c in all_cells)
    out.append(
        ("MCU ≤ base + one standard error in every cell", f"{within} of {len(all_cells)}", within == len(all_cells))
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    merged = tables(args.files)
    all_cells = [cell for name, per_seed in merged.items() for cell in cells(per_seed, name)]
    # A method that diverged on a seed has no cell (bench.quality records it instead of a row): listed here.
    diverged = [
        f"{name}: {entry}"
        for name, per_seed in merged.items()
        for rows in per_seed
        for entry in rows.get("_diverged", [])
    ]
    print(
        markdown_table(
            ["table", "base", "seeds", "base gap [95% CI]", "MCU gap [95% CI]", "MCU ToW [95% CI]", "MCU oracle gap",
             "published rule gap", "MCU ≤ base + SE"],
            [
                [c.table, c.base, c.seeds, str(c.base_gap), str(c.mcu_gap),
                 f"{c.mcu_tow.mean:.3f} [{c.mcu_tow.mean - c.mcu_tow.half_width:.3f}, "
                 f"{c.mcu_tow.mean + c.mcu_tow.half_width:.3f}]",
                 f"{c.oracle_gap:.2f}", f"{c.published_rule_gap:.2f}", "yes" if c.within_base_error else "**no**"]
                for c in all_cells
            ],
        )
    )  # fmt: skip
    for entry in diverged:
        print(f"diverged: {entry}")
    checked = goals(all_cells)
    verdict = {True: "met", False: "**not met**", None: "not measured"}
    print()
    print(markdown_table(["goal (issue 23)", "measured", "result"], [[g, m, verdict[ok]] for g, m, ok in checked]))
    write_json(
        args.json,
        {
            "cells": [
                {"table": c.table, "base": c.base, "seeds": c.seeds, "within_base_error": c.within_base_error}
                | {k: vars(getattr(c, k)) for k in ("base_gap", "mcu_gap", "mcu_tow")}
                | {"oracle_gap": c.oracle_gap, "published_rule_gap": c.published_rule_gap}
                for c in all_cells
            ],
            "goals": [{"goal": g, "measured": m, "met": ok} for g, m, ok in checked],
            "diverged": diverged,
        },
    )
    met = sum(ok is True for _, _, ok in checked)
    measured = sum(ok is not None for _, _, ok in checked)
    within = sum(c.within_base_error for c in all_cells)
    print(
        f"summary: cells={len(all_cells)} within_base_error={within} diverged={len(diverged)} "
        f"goals_met={met}/{measured}"
    )


if __name__ == "__main__":
    main()
