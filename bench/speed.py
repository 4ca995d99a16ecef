"""Training speed: MCU against fine-tuning and retraining, on random CIFAR-shaped data.

    python -m bench.speed --json bench/results/speed.json [--device cuda] [--train 2000]

For each architecture (ResNet-18 and cnn-small): seconds per training sample of fine-tuning (`ft`) and
of curve training (default mask), their ratio, curve training with per-tensor masks keeping about
100%, 50% and 10% of the weights, the time of one grid point, and a whole MCU job (mask + `rl` base +
curve + 21-point grid) against retraining with the original's schedule (`retrain`: 20 epochs).
Random weights and data: this measures throughput, not forgetting.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from bench.gpu_speed import random_cifar, synchronize, warm_up
from unlearning import BezierCurve, build_model, compute_mask, make_unlearning_data, run_unlearning
from unlearning.base_methods import MethodContext, run_base_method
from unlearning.config import MaskConfig, Targets, resolve_config
from unlearning.data import UnlearningData
from unlearning.mcu import train_control_point
from unlearning.metrics import EvalSets
from unlearning.pipeline import measure_point
from unlearning.training import JobHooks

MASKS = {"1.0": MaskConfig(retain_filter=0.0, forget_reserve=1.0),
         "0.5": MaskConfig(retain_filter=0.0, forget_reserve=0.5),
         "0.1": MaskConfig(retain_filter=0.0, forget_reserve=0.1)}


def timed(device: torch.device, fn: Any) -> tuple[Any, float]:
    synchronize(device)
    started = time.perf_counter()
    value = fn()
    synchronize(device)
    return value, time.perf_counter() - started


def measure(architecture: str, data: UnlearningData, device: torch.device, epochs: int) -> dict[str, Any]:
    model = build_model(architecture, 10, tuple(data.retain.inputs.shape[1:])).to(device).eval()
    warm_up(model, data, device)
    config = resolve_config({"epochs": epochs, "base": {"epochs": epochs}}, "ft")
    context = MethodContext(0, JobHooks())
    theta_p, ft_s = timed(device, lambda: run_base_method("ft", model, data, config.base, context))
    ft_per_sample = ft_s / (epochs * len(data.retain))
    curve_samples = epochs * (len(data.forget) + round(config.retain_ratio * len(data.retain)))
    targets = Targets(retain_accuracy=0.9, forget_accuracy=0.1)

    def curve_time(mask_config: MaskConfig) -> tuple[float, float]:
        mask = compute_mask(model, data.retain, data.forget, data.adapter, mask_config, config.eval.batch_size)
        curve = BezierCurve(model, model.state_dict(), theta_p.state_dict())
        _, seconds = timed(device, lambda: train_control_point(curve, data, mask, config, targets))
        return seconds / curve_samples, mask.kept_share

    default_s, default_share = curve_time(config.mask)
    by_mask = {label: dict(zip(("s_per_sample", "kept_share"), curve_time(m), strict=True))
               for label, m in MASKS.items()}
    sets = EvalSets.draw(data, config.eval, 0)
    curve = BezierCurve(model, model.state_dict(), theta_p.state_dict())
    _, point_s = timed(device, lambda: [measure_point(curve, t, data, sets, config) for t in (0.25, 0.5, 0.75)])

    retrain_config = resolve_config(None, "retrain").base
    _, retrain_s = timed(device, lambda: run_base_method("retrain", model, data, retrain_config, context))
    job, job_s = timed(device, lambda: run_unlearning(model, data, "rl", {"epochs": epochs}, device=device))
    return {
        "architecture": architecture,
        "ft_s_per_sample": ft_per_sample,
        "mcu_s_per_sample": default_s,
        "ratio_mcu_ft": default_s / ft_per_sample,
        "default_mask_kept_share": default_share,
        "mcu_s_per_sample_by_mask": {k: v["s_per_sample"] for k, v in by_mask.items()},
        "kept_share_by_mask": {k: v["kept_share"] for k, v in by_mask.items()},
        "grid_point_s": point_s / 3,
        "job_s": job_s,
        "job_timings": job.timings,
        "retrain_s": retrain_s,
        "retrain_epochs": retrain_config.epochs,
        "job_over_retrain": job_s / retrain_s,
    }


def markdown(results: list[dict[str, Any]]) -> str:
    lines = ["| architecture | FT ms/sample | MCU ms/sample | MCU/FT | MCU ms/sample at 100% / 50% / 10% kept "
             "(actual share) | grid point s | job s (mask/base/curve/grid) | retrain s | job/retrain |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        masks = " / ".join(f"{1000 * r['mcu_s_per_sample_by_mask'][k]:.2f} ({r['kept_share_by_mask'][k]:.0%})"
                           for k in MASKS)
        phases = "/".join(f"{r['job_timings'][k]:.0f}" for k in ("mask", "base", "curve", "evaluate"))
        lines.append(f"| {r['architecture']} | {1000 * r['ft_s_per_sample']:.2f} | "
                     f"{1000 * r['mcu_s_per_sample']:.2f} | {r['ratio_mcu_ft']:.2f} | {masks} | "
                     f"{r['grid_point_s']:.2f} | {r['job_s']:.0f} ({phases}) | {r['retrain_s']:.0f} | "
                     f"{r['job_over_retrain']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--train", type=int, default=2000, help="training rows (test rows: a quarter)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of ft and of curve training")
    parser.add_argument("--architectures", default="resnet18,cnn-small")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)
    dataset = random_cifar(args.train, args.train // 4, seed=0)
    forget = torch.randperm(args.train, generator=torch.Generator().manual_seed(1))[: args.train // 10]
    results = []
    for architecture in args.architectures.split(","):
        channels = 3
        data = make_unlearning_data(dataset, channels=channels, forget_indices=forget).to(device)
        results.append(measure(architecture, data, device, args.epochs))
        print(f"{architecture} done", flush=True)
    print(f"\nrandom 3×32×32 data, {args.train} train rows, 10% forgotten, {args.epochs} epochs, device {device}, "
          f"{torch.get_num_threads()} CPU threads\n")
    print(markdown(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": str(device), "train": args.train, "epochs": args.epochs,
                                         "results": results}, indent=2))


if __name__ == "__main__":
    main()
