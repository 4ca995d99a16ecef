"""An auditor's attacks (unlearning/attacks.py) on retraining, each base method and MCU's recommended point.

    python -m bench.evidence --dataset mnist5k --scenario classwise --json docs/results/evidence-mnist5k-classwise.json
    python -m bench.evidence --dataset fashion --train 20000 --scenario classwise --methods rl,salun --shadow-models 2

Per seed, on the θ_o, forget set and models of bench.quality: the retrained model (the gold standard), each base
method's θ_p, MCU's recommended point on each θ_p (φ(t) with retain-only BatchNorm, as the service publishes it)
and θ_o itself. Each one is attacked alike with the service's defaults (`EvidenceConfig`): relearning on retain
rows only (class-wise also k-shot) for the whole step budget, the feature probe, and with `--shadow-models N`
per-sample membership scores against N shadow models trained once per seed and shared by every model, so the
models differ only in themselves. Reported (percent; JSON: fractions): forget accuracy before relearning and
after the budget, the recovery (after − before), the probe's accuracy on forget rows and on test rows of the
same classes, the worst decile's mean membership score of forget and of test rows, and `exposed_share` (forget
rows above 95% of test rows; 5% for rows a model never saw). Mean over seeds. `--points 0.25,0.5` adds other
points of each MCU curve; `--relearn-steps` / `--relearn-lr` change the relearning budget.

Last line: `evidence: mcu_relearn_gap=<points> ...`, MCU(--headline-base)'s forget accuracy after the relearning
budget minus the retrained model's (k-shot where the scenario has it, else retain-only), in points.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.common import markdown_table, write_json
from bench.quality import (
    ORIGINAL_TRAINING,
    aggregate,
    forget_data,
    load_dataset,
    measured,
    original_model,
)
from unlearning import CurveResult, ImageDataset, run_unlearning
from unlearning.attacks import measured_rows, run_attacks
from unlearning.base_methods import MethodContext, run_base_method
from unlearning.config import EvalConfig, EvidenceConfig, offered_base_methods, resolve_config
from unlearning.data import UnlearningData
from unlearning.membership import membership_scores, train_shadow_models
from unlearning.metrics import EvalSets
from unlearning.training import JobHooks


def attacked_models(
    dataset: ImageDataset,
    name: str,
    data: UnlearningData,
    seed: int,
    methods: list[str],
    points: list[float],
    log: Any,
) -> tuple[dict[str, nn.Module], dict[str, float], dict[str, float]]:
    """(label → model, MCU's t per label, seconds per phase): every model with retain-only BatchNorm statistics
    but θ_o, which keeps its own (as the service attacks them). `points`: more t of each curve to attack."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    original = original_model(name, dataset, seed)
    timings["original"] = time.perf_counter() - started
    sets = EvalSets.draw(data, EvalConfig(), seed).every_row(data)
    context = MethodContext(seed, JobHooks())
    started = time.perf_counter()
    retrained = run_base_method("retrain", original, data, resolve_config(None, "retrain").base, context)
    measured(retrained, sets, data)  # retain-only BatchNorm, as every other row
    timings["retrain"] = time.perf_counter() - started
    models: dict[str, nn.Module] = {"retrain": retrained.eval()}
    recommended_t: dict[str, float] = {}
    for method in methods:
        started = time.perf_counter()
        base = run_base_method(method, original, data, resolve_config(None, method).base, context)
        theta_p = {k: v.detach().clone() for k, v in base.state_dict().items()}
        measured(base, sets, data)
        models[method] = base.eval()
        result = run_unlearning(original, data, method, {"seed": seed}, theta_p=theta_p, device="cpu")
        models[f"mcu({method})"] = curve_point(result, result.recommended_t)
        recommended_t[f"mcu({method})"] = result.recommended_t
        for t in points:
            models[f"mcu({method})@{t:.2f}"] = curve_point(result, t)
            recommended_t[f"mcu({method})@{t:.2f}"] = t
        timings[method] = time.perf_counter() - started
        log(f"  seed {seed} {method}: θ_p and MCU (t = {result.recommended_t:.2f}) in {timings[method]:.0f} s")
    models["original"] = original
    return models, recommended_t, timings


def curve_point(result: CurveResult, t: float) -> nn.Module:
    """φ(t) with retain-only BatchNorm statistics, as the service publishes it, in a model of its own."""
    result.materialize(t)  # leaves φ(t) in curve.model
    return copy.deepcopy(result.curve.model).eval()


def membership(
    models: dict[str, nn.Module], template: nn.Module, data: UnlearningData, config: EvidenceConfig, seed: int
) -> dict[str, dict[str, Any]]:
    """Per-sample membership of every model against one set of shadow models (attacks.per_sample_membership
    trains new ones per call from its first model: here every model meets the same shadows and rows)."""
    shadows = train_shadow_models(
        template, data.retain, data.adapter, count=config.shadow_models, epochs=config.shadow_epochs, seed=seed
    )
    test = data.test_split_by_class()[1] if data.scenario == "classwise" else data.test
    forget = measured_rows(data.forget, config, seed)
    test = measured_rows(test, config, seed)
    return {label: membership_scores(m, shadows, forget, test, data.adapter).summary() for label, m in models.items()}


def evidence_rows(evidence: dict[str, Any], recommended_t: dict[str, float]) -> dict[str, dict[str, float]]:
    """One flat row of fractions per model (bench.quality.aggregate averages them over seeds)."""
    rows: dict[str, dict[str, float]] = {}
    relearning = evidence["relearning"]
    for label, curve in relearning["retain_only"].items():
        before, after = curve["forget_accuracy"][0], curve["forget_accuracy"][-1]
        row = {"forget_acc": before, "relearn_acc": after, "relearn_recovery": after - before}
        if "k_shot" in relearning:
            shots = relearning["k_shot"][label]["forget_accuracy"]
            row |= {"kshot_acc": shots[-1], "kshot_recovery": shots[-1] - shots[0]}
        probe = evidence["feature_probe"][label]
        row |= {"probe_forget": probe["forget_accuracy"], "probe_test": probe["test_accuracy"]}
        if "membership" in evidence:
            summary = evidence["membership"][label]
            row |= {
                "worst_decile_forget": summary["forget"]["worst_decile"],
                "worst_decile_test": summary["test"]["worst_decile"],
                "exposed_share": summary["exposed_share"],
            }
        if label in recommended_t:
            row["t"] = recommended_t[label]
        rows[label] = row
    return rows


def run_seed(
    dataset: ImageDataset,
    name: str,
    scenario: str,
    seed: int,
    methods: list[str],
    points: list[float],
    config: EvidenceConfig,
    log: Any,
) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    data = forget_data(dataset, scenario, seed)
    models, recommended_t, timings = attacked_models(dataset, name, data, seed, methods, points, log)
    started = time.perf_counter()
    evidence = run_attacks(models, data, dataclasses.replace(config, shadow_models=0), seed)
    timings["relearning_and_probe"] = time.perf_counter() - started
    if config.shadow_models:
        started = time.perf_counter()
        evidence["membership"] = membership(models, models["original"], data, config, seed)
        timings["membership"] = time.perf_counter() - started
    attacks_s = timings["relearning_and_probe"] + timings.get("membership", 0.0)
    log(f"  seed {seed}: attacks in {attacks_s:.0f} s")
    return evidence_rows(evidence, recommended_t), {"seed": seed, "timings_s": timings, "evidence": evidence}


COLUMNS = {
    "t": "t",
    "FA": "forget_acc",
    "FA relearned": "relearn_acc",
    "recovery": "relearn_recovery",
    "k-shot FA relearned": "kshot_acc",
    "k-shot recovery": "kshot_recovery",
    "probe FA": "probe_forget",
    "probe TA": "probe_test",
    "worst decile forget": "worst_decile_forget",
    "worst decile test": "worst_decile_test",
    "exposed": "exposed_share",
}
PERCENT = {"forget_acc", "relearn_acc", "relearn_recovery", "kshot_acc", "kshot_recovery", "probe_forget", "probe_test"}


def markdown(rows: list[dict[str, Any]]) -> str:
    columns = {title: key for title, key in COLUMNS.items() if any(key in row for row in rows)}

    def cell(row: dict[str, Any], key: str) -> str:
        if key not in row or row[key] is None or np.isnan(row[key]):
            return ""
        if key in PERCENT or key == "exposed_share":
            return f"{100 * row[key]:.1f}"
        return f"{row[key]:.2f}"

    return markdown_table(["model", *columns], [[r["method"], *(cell(r, k) for k in columns.values())] for r in rows])


def headline(rows: list[dict[str, Any]], scenario: str, base: str) -> str:
    """`evidence: mcu_relearn_gap=...`: MCU(base)'s relearned forget accuracy minus retrain's, in points."""
    by_label = {row["method"]: row for row in rows}
    mcu, retrain = by_label[f"mcu({base})"], by_label["retrain"]
    key = "kshot_acc" if "kshot_acc" in retrain else "relearn_acc"
    pairs = {
        "mcu_relearn_gap": 100 * (mcu[key] - retrain[key]),
        "scenario": scenario,
        "measure": "k_shot" if key == "kshot_acc" else "retain_only",
        "base": base,
        "retrain_relearn": 100 * retrain[key],
        "mcu_relearn": 100 * mcu[key],
        "base_relearn": 100 * by_label[base][key],
        "original_relearn": 100 * by_label["original"][key],
        "mcu_probe_gap": 100 * (mcu["probe_forget"] - retrain["probe_forget"]),
    }
    if "exposed_share" in mcu:
        pairs |= {
            f"{label}_exposed": 100 * by_label[name]["exposed_share"]
            for label, name in (
                ("mcu", f"mcu({base})"),
                ("retrain", "retrain"),
                ("base", base),
                ("original", "original"),
            )
        }
    return "evidence: " + " ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in pairs.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("digits", "mnist5k", "fashion"), default="mnist5k")
    parser.add_argument("--train", type=int, help="only the first N training rows (θ_o cached per N)")
    parser.add_argument("--scenario", choices=("random", "classwise"), default="classwise")
    parser.add_argument("--seed-list", default="0", help="comma-separated seeds (default %(default)s)")
    parser.add_argument(
        "--methods",
        default=",".join(method.name for method in offered_base_methods()),
        help="comma-separated base methods (default: every one the service offers, %(default)s)",
    )
    parser.add_argument("--points", default="", help="more t of each MCU curve to attack, e.g. 0.25,0.5,1")
    parser.add_argument("--headline-base", default="rl", help="MCU on this base gives the last line's gap")
    parser.add_argument("--shadow-models", type=int, default=4, help="0: no membership scores")
    parser.add_argument(
        "--shadow-epochs", type=int, default=ORIGINAL_TRAINING["epochs"], help="default: θ_o's (%(default)s)"
    )
    parser.add_argument("--relearn-steps", type=int, default=EvidenceConfig.relearn_steps, help="≥ 1 (%(default)s)")
    parser.add_argument("--relearn-lr", type=float, default=EvidenceConfig.relearn_lr, help="%(default)s")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.relearn_steps < 1:
        parser.error("--relearn-steps must be at least 1: the table is built around the relearning check")
    torch.set_num_threads(1)

    methods = args.methods.split(",")
    points = [float(t) for t in args.points.split(",") if t]
    base = args.headline_base if args.headline_base in methods else methods[0]
    config = EvidenceConfig(
        relearn_steps=args.relearn_steps,
        relearn_lr=args.relearn_lr,
        shadow_models=args.shadow_models,
        shadow_epochs=args.shadow_epochs,
    )
    dataset = load_dataset(args.dataset)
    name = args.dataset
    if args.train:
        dataset = dataclasses.replace(
            dataset, train_inputs=dataset.train_inputs[: args.train], train_labels=dataset.train_labels[: args.train]
        )
        name = f"{args.dataset}-train{args.train}"  # its own θ_o cache file
    seeds = [int(s) for s in args.seed_list.split(",")]
    started = time.perf_counter()
    per_seed, raw = [], []
    for seed in seeds:
        rows, details = run_seed(dataset, name, args.scenario, seed, methods, points, config, print)
        per_seed.append(rows)
        raw.append(details)
    rows = aggregate(per_seed)
    print(
        f"\n{name}, {args.scenario} forgetting, seeds {seeds}, {args.shadow_models} shadow models "
        f"({args.shadow_epochs} epochs); percent except t and membership scores (mean over seeds)\n"
    )
    print(markdown(rows))
    write_json(
        args.json,
        {
            "dataset": args.dataset,
            "train_rows": len(dataset.train_labels),
            "scenario": args.scenario,
            "seeds": seeds,
            "methods": methods,
            "points": points,
            "evidence_config": dataclasses.asdict(config),
            "rows": rows,
            "per_seed": raw,
            "total_s": round(time.perf_counter() - started, 1),
        },
    )
    print(headline(rows, args.scenario, base))


if __name__ == "__main__":
    main()
