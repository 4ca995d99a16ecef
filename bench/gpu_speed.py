"""Speed of one MCU job on a GPU: ResNet-18 on random CIFAR-shaped data (bench/gpu_check.sh runs it).

    python -m bench.gpu_speed                       # CUDA: 5,000 train / 1,000 test, forget 10%
    python -m bench.gpu_speed --device cpu --small  # a quick run anywhere, to check that it works

Random weights and data: this measures throughput, not forgetting. Prints fine-tuning (the `ft` base
method) steps/s, MCU curve-training steps/s and their ratio, the time of one grid point (θ(t) with
BatchNorm recomputed on retain rows, then every metric), and the peak GPU memory.
"""

from __future__ import annotations

import argparse
import time
from copy import deepcopy

import torch

from unlearning import BezierCurve, ImageDataset, build_model, compute_mask, make_unlearning_data
from unlearning.base_methods import MethodContext, run_base_method
from unlearning.config import Targets, resolve_config
from unlearning.data import UnlearningData
from unlearning.mcu import train_control_point
from unlearning.metrics import EvalSets
from unlearning.pipeline import measure_point
from unlearning.training import JobHooks, Progress, plain_batches


def random_cifar(n_train: int, n_test: int, seed: int) -> ImageDataset:
    """uint8 images 3×32×32 with 10 classes, like CIFAR-10, drawn at random."""
    generator = torch.Generator().manual_seed(seed)

    def images(n: int) -> torch.Tensor:
        return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator)

    def labels(n: int) -> torch.Tensor:
        return torch.randint(0, 10, (n,), generator=generator)

    return ImageDataset(images(n_train), labels(n_train), images(n_test), labels(n_test), num_classes=10)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def warm_up(model: torch.nn.Module, data: UnlearningData, device: torch.device) -> None:
    """One untimed training step on a copy, so CUDA/cuDNN start-up is not billed to the first phase."""
    copy = deepcopy(model).train()
    batch = next(iter(plain_batches(data.retain, 128, data.adapter, torch.Generator().manual_seed(0))))
    torch.nn.functional.cross_entropy(copy(batch.inputs), batch.labels).backward()
    synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="tiny sizes (seconds on a CPU)")
    parser.add_argument("--epochs", type=int, help="epochs of fine-tuning and of curve training (3; 1 with --small)")
    args = parser.parse_args()
    device = torch.device(args.device)
    n_train, n_test, eval_rows = (320, 64, 64) if args.small else (5000, 1000, 1000)
    epochs = args.epochs or (1 if args.small else 3)

    dataset = random_cifar(n_train, n_test, seed=0)
    forget = torch.randperm(n_train, generator=torch.Generator().manual_seed(1))[: n_train // 10]
    data = make_unlearning_data(dataset, channels=3, forget_indices=forget).batches_on(device)
    model = build_model("resnet18", 10, dataset.input_shape).to(device)
    config = resolve_config(
        {
            "epochs": epochs,
            "base": {"epochs": epochs},
            "eval": {"bn_samples": eval_rows, "retain_rows": eval_rows, "test_rows": eval_rows},
        },
        "ft",
    )
    warm_up(model, data, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    ft_steps = 0

    def count_ft_step(progress: Progress) -> None:
        nonlocal ft_steps
        ft_steps += progress.phase == "base"

    synchronize(device)
    started = time.perf_counter()
    theta_p = run_base_method("ft", model, data, config.base, MethodContext(config.seed, JobHooks(count_ft_step)))
    synchronize(device)
    ft_seconds = time.perf_counter() - started

    mask = compute_mask(model.eval(), data.retain, data.forget, data.adapter, config.mask, config.eval.batch_size)
    curve = BezierCurve(model, model.state_dict(), theta_p.state_dict())
    synchronize(device)
    started = time.perf_counter()
    stats = train_control_point(curve, data, mask, config, Targets(retain_accuracy=0.9, forget_accuracy=0.1))
    synchronize(device)
    curve_seconds = time.perf_counter() - started

    sets = EvalSets.draw(data, config.eval, config.seed)
    started = time.perf_counter()
    metrics = measure_point(curve, 0.5, data, sets, config)
    synchronize(device)
    point_seconds = time.perf_counter() - started

    ft_rate, curve_rate = ft_steps / ft_seconds, stats.batches / curve_seconds
    print(
        f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
        f"resnet18, train {n_train}, test {n_test}, forget {len(forget)}, batch {config.batch_size}, "
        f"mask keeps {mask.kept_share:.0%} of the weights"
    )
    print(f"FT steps/s            {ft_rate:8.2f}  ({ft_steps} steps in {ft_seconds:.2f} s)")
    print(f"MCU curve steps/s     {curve_rate:8.2f}  ({stats.batches} steps in {curve_seconds:.2f} s)")
    print(f"MCU / FT step ratio   {curve_rate / ft_rate:8.2f}")
    measured = len(sets.retain) + len(sets.forget) + len(sets.test)
    print(
        f"one grid point        {point_seconds:8.2f} s  (t=0.5: BatchNorm from {len(sets.bn)} retain rows, "
        f"metrics on {measured} rows; forget accuracy {metrics.forget_accuracy:.2f})"
    )
    if device.type == "cuda":
        print(f"peak GPU memory       {torch.cuda.max_memory_allocated(device) / 2**20:8.0f} MiB")


if __name__ == "__main__":
    main()
