"""The MIA target of the recommended-t rule against retrained models, and the rule replayed on stored curves.

    python -m bench.mia_target docs/results/quality-fashion-{random,random50}.json --json docs/results/mia-target.json

For each seed of each random-forgetting file (bench.quality JSON, MCU rows with their `_points`), from the same
θ_o (bench.quality's cache), forget set and sampled rows as the run: the retrained model's MIA efficacy (from the
file) and three targets: the one derived before 2026-12-04 (an SVC trained on half the sampled test rows and as
many retain rows, applied to the other half), the one of 2026-12-04 (θ_o's test rows measured as every point
measures forget rows) and the library's now (that one, or none where θ_o's attack is a coin flip:
`attack_spread` above `MIA_TARGET_MAX_SPREAD`). Then, per MCU row, the recommended t under each target, replayed
on the stored grid points (each metric interpolated as the rule does), and the Avg. Gap to the retrained model
there. A replay, not a rerun: the grid's fine pass was measured around the run's choice, and grid points are on
samples, not on every row. Last line: `mia_target: error_before=... error_unchecked=... spread=...
gap_before=... gap_unchecked=... gap_now=... oracle=...`.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.interpolate import CubicSpline

from bench.common import markdown_table, write_json
from bench.quality import METRICS, forget_data, load_dataset, original_model
from unlearning import ImageDataset
from unlearning.config import EvalConfig, Targets
from unlearning.metrics import EvalSets, PointMetrics, attack_spread, mia_efficacy, predict
from unlearning.pipeline import derive_targets
from unlearning.spectrum import forget_noise, recommend_t
from unlearning.transforms import AUGMENTATION_PRESETS, Augmentation

RULES = ("before", "unchecked", "now")  # the three MIA targets, oldest first


def targets(setting: dict[str, Any], dataset: ImageDataset, seed: int) -> tuple[dict[str, Targets], float, int]:
    """({rule: targets}, θ_o's attack spread, forget rows) for one seed of a bench.quality setting on `dataset`."""
    augmentation = Augmentation.from_list(AUGMENTATION_PRESETS[setting.get("augmentation") or "none"])
    model = original_model(
        setting["dataset"], dataset, seed, setting["architecture"], augmentation, setting.get("architecture_kwargs")
    )
    data = forget_data(dataset, setting["scenario"], seed, augmentation)
    config = EvalConfig()
    sets = EvalSets.draw(data, config, seed)
    now = derive_targets(model, data, sets, config.batch_size)
    members, test = (predict(model, rows, data.adapter, config.batch_size)[1] for rows in sets.attack_rows())
    unchecked = mia_efficacy(members, test, test)  # the attack every point uses, applied to θ_o's test rows
    half = len(test) // 2
    held_out = mia_efficacy(members[:half], test[:half], test[half:])
    rules = {
        "before": replace(now, mia_efficacy=held_out),
        "unchecked": replace(now, mia_efficacy=unchecked),
        "now": now,
    }
    return rules, attack_spread(members, test), len(data.forget)


def gap_at(points: list[dict[str, Any]], t: float, retrain: dict[str, float]) -> float:
    """Avg. Gap (points) at `t`, each metric interpolated through the measured points as the rule does."""
    ts = [p["t"] for p in points]
    values = {name: float(np.clip(CubicSpline(ts, [p[name] for p in points])(t), 0, 1)) for name in METRICS.values()}
    return 100 * float(np.mean([abs(values[name] - retrain[short]) for short, name in METRICS.items()]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds, curves = [], []
    for path in args.files:
        payload = json.loads(path.read_text())
        if payload["scenario"] == "classwise":  # its MIA target is 1, not estimated
            continue
        dataset = load_dataset(payload["dataset"])
        for seed, rows in zip(payload["seeds"], payload["per_seed"], strict=True):
            rules, spread, forget_rows = targets(payload, dataset, seed)
            retrain = rows["retrain"]
            seeds.append({"file": path.name, "seed": seed, "retrain": retrain["MIA"], "spread": spread}
                         | {rule: target.mia_efficacy for rule, target in rules.items()})  # fmt: skip
            for label, row in rows.items():
                if not label.startswith("mcu(") or "_points" not in row:
                    continue
                points = sorted(row["_points"], key=lambda p: p["t"])
                metrics = [PointMetrics(**p) for p in points]
                chosen = {
                    rule: recommend_t(metrics, target, noise=forget_noise(metrics, target, forget_rows))
                    for rule, target in rules.items()
                }
                curves.append({"file": path.name, "seed": seed, "method": label}
                              | {f"t_{k}": t for k, t in chosen.items()}
                              | {f"gap_{k}": gap_at(points, t, retrain) for k, t in chosen.items()}
                              | {"oracle": row["oracle_gap"]})  # fmt: skip

    def target(value: float | None) -> str:
        return "none" if value is None else f"{value:.3f}"

    print(markdown_table(
        ["file", "seed", "retrained model's MIA", "attack spread", *(f"target {rule}" for rule in RULES)],
        [[s["file"], s["seed"], f"{s['retrain']:.3f}", f"{s['spread']:.3f}", *(target(s[rule]) for rule in RULES)]
         for s in seeds],
    ))  # fmt: skip
    print()
    print(markdown_table(
        ["file", "seed", "MCU", *(f"{k} {rule}" for rule in RULES for k in ("t", "gap")), "oracle"],
        [[c["file"], c["seed"], c["method"], *(f"{c[f'{k}_{rule}']:.2f}" for rule in RULES for k in ("t", "gap")),
          f"{c['oracle']:.2f}"] for c in curves],
    ))  # fmt: skip
    figures = {
        "error_before": float(np.mean([abs(s["before"] - s["retrain"]) for s in seeds])),
        "error_unchecked": float(np.mean([abs(s["unchecked"] - s["retrain"]) for s in seeds])),
        "spread": float(np.mean([s["spread"] for s in seeds])),
        **{f"gap_{rule}": float(np.mean([c[f"gap_{rule}"] for c in curves])) for rule in RULES},
        "oracle": float(np.mean([c["oracle"] for c in curves])),
    }
    write_json(args.json, {"seeds": seeds, "curves": curves, "means": figures})
    print(
        "mia_target: "
        + " ".join(f"{k}={v:.3f}" for k, v in figures.items())
        + f" seeds={len(seeds)} curves={len(curves)}"
    )


if __name__ == "__main__":
    main()
