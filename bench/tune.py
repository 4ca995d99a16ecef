"""Base-method defaults: a small lr × epochs grid (× a method's own key setting, e.g. SCRUB's max_epochs) on digits
and MNIST-5k, random and class-wise forgetting.

    python -m bench.tune --seed-list 3 --json docs/results/tune.json

Per (dataset, scenario) and seed: θ_o and the retrained model as bench.quality builds them, then every
base method at every grid setting; reported: Avg. Gap to retrain (points) per cell, their mean, and the
lowest retain accuracy (RA) over the cells. Tune on seeds the quality tables do not use (default 3).
The chosen default per method: the least mean gap among settings whose RA stays ≥ 90% in every cell.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import markdown_table, write_json
from bench.quality import forget_data, load_dataset, measured, original_model
from unlearning.base_methods import MethodContext, run_base_method
from unlearning.config import EvalConfig, resolve_config
from unlearning.metrics import EvalSets, avg_gap
from unlearning.training import JobHooks

GRID = {
    "ft": {"lr": (0.01, 0.05, 0.1), "epochs": (3, 10)},
    "ga": {"lr": (0.001, 0.002, 0.003, 0.005, 0.01), "epochs": (2, 3, 5)},
    "neggrad_plus": {"lr": (0.01, 0.05), "epochs": (3, 5)},
    "rl": {"lr": (0.013, 0.03), "epochs": (2, 5, 10)},
    "salun": {"lr": (0.013, 0.03), "epochs": (2, 5, 10)},
    "l1_sparse": {"lr": (0.01, 0.05, 0.1, 0.2), "epochs": (5, 10, 15)},
    "scrub": {"lr": (0.0005, 0.001, 0.002), "epochs": (5, 10), "max_epochs": (2, 4)},
}
CELLS = (("digits", "random"), ("digits", "classwise"), ("mnist5k", "random"), ("mnist5k", "classwise"))
RA_FLOOR = 0.9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed-list", default="3")
    parser.add_argument("--methods", default=",".join(GRID))
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--grid",
        type=json.loads,
        default={},
        help='a method\'s grid instead of GRID\'s, e.g. \'{"scrub": {"lr": [0.001], "forget_loss_cap": [1, 5]}}\'',
    )
    args = parser.parse_args()
    grid = GRID | args.grid
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seed_list.split(",")]
    methods = args.methods.split(",")
    results: dict[tuple[str, tuple[tuple[str, Any], ...]], dict[str, Any]] = {}
    for (name, scenario), seed in itertools.product(CELLS, seeds):
        dataset = load_dataset(name)
        original = original_model(name, dataset, seed)
        data = forget_data(dataset, scenario, seed)
        sets = EvalSets.draw(data, EvalConfig(), seed)
        context = MethodContext(seed, JobHooks())
        reference = measured(
            run_base_method("retrain", original, data, resolve_config(None, "retrain").base, context), sets, data
        )
        for method in methods:
            for values in itertools.product(*grid[method].values()):
                settings = dict(zip(grid[method], values, strict=True))
                config = resolve_config({"base": settings}, method).base
                started = time.perf_counter()
                metrics = measured(run_base_method(method, original, data, config, context), sets, data)
                entry = results.setdefault((method, tuple(settings.items())), {"gaps": {}, "ra": {}, "seconds": 0.0})
                cell = f"{name}-{scenario}"
                entry["gaps"].setdefault(cell, []).append(100 * avg_gap(metrics, reference))
                entry["ra"].setdefault(cell, []).append(metrics.retain_accuracy)
                entry["seconds"] += time.perf_counter() - started
        print(f"{name} {scenario} seed {seed} done", flush=True)

    rows, chosen = [], {}
    for (method, settings), entry in results.items():
        gaps = {cell: sum(v) / len(v) for cell, v in entry["gaps"].items()}
        min_ra = min(min(v) for v in entry["ra"].values())
        mean_gap = sum(gaps.values()) / len(gaps)
        rows.append(
            {
                "method": method,
                "settings": dict(settings),
                "gaps": gaps,
                "mean_gap": mean_gap,
                "min_ra": min_ra,
                "seconds": entry["seconds"],
            }
        )
        best = chosen.get(method)
        if min_ra >= RA_FLOOR and (best is None or mean_gap < best["mean_gap"]):
            chosen[method] = rows[-1]
    cells = [f"{n}-{s}" for n, s in CELLS]
    table = [
        [
            r["method"],
            r["settings"]["lr"],
            r["settings"]["epochs"],
            ", ".join(f"{k} {v}" for k, v in r["settings"].items() if k not in ("lr", "epochs")),
            *(f"{r['gaps'].get(c, float('nan')):.2f}" for c in cells),
            f"{r['mean_gap']:.2f}",
            f"{100 * r['min_ra']:.1f}",
            f"{r['seconds']:.1f}",
            "**chosen**" if chosen.get(r["method"]) is r else "",
        ]
        for r in rows
    ]
    print(f"\nAvg. Gap to retrain (points), seeds {seeds}; min RA in percent over the cells\n")
    print(markdown_table(["method", "lr", "epochs", "other", *cells, "mean gap", "min RA", "s", ""], table))
    write_json(
        args.json,
        {
            "seeds": seeds,
            "rows": rows,
            "chosen": {m: r["settings"] for m, r in chosen.items()},
        },
    )


if __name__ == "__main__":
    main()
