"""Training speed: MCU against fine-tuning and retraining, on random CIFAR-shaped data or Fashion-MNIST.

    python -m bench.speed --train 20000 --architectures cnn-small --reps 3 --json docs/results/speed-20000.json
    python -m bench.speed --dataset fashion --train 60000 --architectures cnn-small --reps 1 --json speed.json
    python -m bench.speed --train 2000 --architectures resnet18,cnn-small --skip-job --json docs/results/speed.json

Per architecture: seconds per training sample of fine-tuning (`ft`) and of curve training (default mask)
and their ratio; a whole MCU job (mask + `rl` base with its defaults + curve + grid) against retraining
with the original's schedule (`retrain`: 20 epochs), with the grid ÷ curve-training time inside the job.
Robust to a busy host: the compared phases are interleaved over `--reps` repetitions (order alternating)
and every figure is reported as the median with its min–max, in wall time and in this process's CPU time
(one torch thread: CPU time does not grow when another process takes the core). Random weights and data:
this measures throughput, not forgetting. `--dataset fashion`: Fashion-MNIST's first `--train` rows (28×28 grey;
Debian package dataset-fashion-mnist) and its 10,000 test rows, random 10% forgotten.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import fashion_mnist, markdown_table, write_json
from bench.gpu_speed import random_cifar, synchronize, warm_up
from unlearning import BezierCurve, build_model, compute_mask, make_unlearning_data, run_unlearning
from unlearning.base_methods import MethodContext, run_base_method
from unlearning.config import Targets, resolve_config
from unlearning.data import UnlearningData
from unlearning.mcu import train_control_point
from unlearning.training import JobHooks, Progress, prepare_model


class Clock:
    """Wall and process-CPU seconds of a callable; phase boundaries of a job from its progress reports."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.phases: dict[str, tuple[float, float]] = {}

    def now(self) -> tuple[float, float]:
        synchronize(self.device)
        return time.perf_counter(), time.process_time()

    def run(self, fn: Any) -> tuple[Any, dict[str, float]]:
        wall, cpu = self.now()
        value = fn()
        wall_end, cpu_end = self.now()
        return value, {"wall": wall_end - wall, "cpu": cpu_end - cpu}

    def on_progress(self, progress: Progress) -> None:
        if progress.phase not in self.phases:
            self.phases[progress.phase] = self.now()


def job_phases(clock: Clock, end: tuple[float, float]) -> dict[str, dict[str, float]]:
    """Per phase wall and CPU seconds, from the first report of each phase to the next phase's."""
    order = [p for p in ("mask", "base", "curve", "evaluate") if p in clock.phases]
    bounds = [clock.phases[p] for p in order] + [end]
    return {
        p: {"wall": bounds[i + 1][0] - bounds[i][0], "cpu": bounds[i + 1][1] - bounds[i][1]}
        for i, p in enumerate(order)
    }


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def measure(
    architecture: str, data: UnlearningData, device: torch.device, epochs: int, reps: int, skip_job: bool
) -> dict[str, Any]:
    # In the layout a job uses, so that ft, retrain and the job are timed alike.
    model = prepare_model(build_model(architecture, 10, tuple(data.retain.inputs.shape[1:])), device).eval()
    warm_up(model, data, device)
    config = resolve_config({"epochs": epochs, "base": {"epochs": epochs}}, "ft")
    context = MethodContext(0, JobHooks())
    curve_samples = epochs * (len(data.forget) + round(config.retain_ratio * len(data.retain)))
    targets = Targets(retain_accuracy=0.9, forget_accuracy=0.1)
    mask = compute_mask(model, data.retain, data.forget, data.adapter, config.mask, config.eval.batch_size)
    clock = Clock(device)
    samples: dict[str, list[float]] = {}
    theta_p: dict[str, torch.Tensor] = {}

    def add(name: str, value: float) -> None:
        samples.setdefault(name, []).append(value)

    for rep in range(reps):

        def ft() -> None:
            tuned, seconds = clock.run(lambda: run_base_method("ft", model, data, config.base, context))
            add("ft_s_per_sample", seconds["wall"] / (epochs * len(data.retain)))
            add("ft_cpu_s_per_sample", seconds["cpu"] / (epochs * len(data.retain)))
            theta_p.update(tuned.state_dict())

        def curve() -> None:
            bezier = BezierCurve(model, model.state_dict(), theta_p)
            _, seconds = clock.run(lambda: train_control_point(bezier, data, mask, config, targets))
            add("mcu_s_per_sample", seconds["wall"] / curve_samples)
            add("mcu_cpu_s_per_sample", seconds["cpu"] / curve_samples)

        def retrain() -> None:
            retrain_config = resolve_config(None, "retrain").base
            _, seconds = clock.run(lambda: run_base_method("retrain", model, data, retrain_config, context))
            add("retrain_s", seconds["wall"])
            add("retrain_cpu_s", seconds["cpu"])

        def job() -> None:
            clock.phases = {}
            result, seconds = clock.run(
                lambda: run_unlearning(
                    model, data, "rl", {"epochs": epochs}, device=device, hooks=JobHooks(on_progress=clock.on_progress)
                )
            )
            phases = job_phases(clock, clock.now())
            add("job_s", seconds["wall"])
            add("job_cpu_s", seconds["cpu"])
            for phase, value in phases.items():
                add(f"{phase}_s", value["wall"])
                add(f"{phase}_cpu_s", value["cpu"])
            add("grid_over_curve", phases["evaluate"]["wall"] / phases["curve"]["wall"])
            add("grid_over_curve_cpu", phases["evaluate"]["cpu"] / phases["curve"]["cpu"])
            add("points_measured", result.training["points_measured"])

        ft()
        steps = [curve] if skip_job else [curve, retrain, job]
        for step in steps if rep % 2 == 0 else steps[::-1]:
            step()
        add("ratio_mcu_ft", samples["mcu_s_per_sample"][-1] / samples["ft_s_per_sample"][-1])
        add("ratio_mcu_ft_cpu", samples["mcu_cpu_s_per_sample"][-1] / samples["ft_cpu_s_per_sample"][-1])
        if not skip_job:
            add("job_over_retrain", samples["job_s"][-1] / samples["retrain_s"][-1])
            add("job_over_retrain_cpu", samples["job_cpu_s"][-1] / samples["retrain_cpu_s"][-1])
        print(
            f"  {architecture} rep {rep + 1}/{reps}: "
            + ", ".join(f"{k} {v[-1]:.3g}" for k, v in samples.items() if "ratio" in k or "over" in k),
            flush=True,
        )
    return {
        "architecture": architecture,
        "mask_kept_share": mask.kept_share,
        "mask_granularity": mask.granularity,
        "reps": reps,
        "samples": samples,
        **{k: summary(v) for k, v in samples.items()},
    }


def markdown(results: list[dict[str, Any]]) -> str:
    def cell(r: dict[str, Any], key: str, scale: float = 1.0) -> str:
        if key not in r:
            return ""
        s = r[key]
        return f"{scale * s['median']:.3g} ({scale * s['min']:.3g}–{scale * s['max']:.3g})"

    rows = []
    for r in results:
        rows.append(
            [
                r["architecture"],
                f"{r['mask_kept_share']:.0%} {r['mask_granularity']}",
                cell(r, "ft_s_per_sample", 1000),
                cell(r, "mcu_s_per_sample", 1000),
                cell(r, "ratio_mcu_ft"),
                cell(r, "ratio_mcu_ft_cpu"),
                cell(r, "job_s"),
                cell(r, "retrain_s"),
                cell(r, "job_over_retrain"),
                cell(r, "job_over_retrain_cpu"),
                cell(r, "curve_s"),
                cell(r, "evaluate_s"),
                cell(r, "grid_over_curve"),
                cell(r, "grid_over_curve_cpu"),
            ]
        )
    return markdown_table(
        [
            "architecture",
            "mask",
            "FT ms/sample",
            "MCU ms/sample",
            "MCU/FT",
            "MCU/FT (CPU)",
            "job s",
            "retrain s",
            "job/retrain",
            "job/retrain (CPU)",
            "curve s",
            "grid s",
            "grid/curve",
            "grid/curve (CPU)",
        ],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("random", "fashion"), default="random")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--train", type=int, default=2000, help="training rows (test rows: a quarter)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of ft and of curve training")
    parser.add_argument("--architectures", default="resnet18,cnn-small")
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions (median and min–max)")
    parser.add_argument("--skip-job", action="store_true", help="only FT vs curve training per sample")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.dataset == "fashion":
        dataset, described = fashion_mnist(args.train), "Fashion-MNIST 1×28×28"
    else:
        dataset, described = random_cifar(args.train, args.train // 4, seed=0), "random 3×32×32 data"
    train_rows = len(dataset.train_labels)
    forget = torch.randperm(train_rows, generator=torch.Generator().manual_seed(1))[: train_rows // 10]
    results = []
    for architecture in args.architectures.split(","):
        data = make_unlearning_data(dataset, channels=dataset.input_shape[0], forget_indices=forget).batches_on(device)
        results.append(measure(architecture, data, device, args.epochs, args.reps, args.skip_job))
    print(
        f"\n{described}, {train_rows} train rows, 10% forgotten, {args.epochs} epochs of ft and curve, "
        f"device {device}, {torch.get_num_threads()} CPU thread(s), {args.reps} interleaved reps: "
        "median (min–max)\n"
    )
    print(markdown(results))
    write_json(
        args.json,
        {
            "dataset": args.dataset,
            "device": str(device),
            "train": train_rows,
            "epochs": args.epochs,
            "reps": args.reps,
            "threads": torch.get_num_threads(),
            "results": results,
        },
    )
    if not args.skip_job:  # the goals' figures (first architecture), last line
        first = results[0]
        print(
            f"speed: dataset={args.dataset} rows={train_rows} architecture={first['architecture']} "
            f"job_over_retrain={first['job_over_retrain']['median']:.3f} "
            f"grid_over_curve={first['grid_over_curve']['median']:.3f}"
        )


if __name__ == "__main__":
    main()
