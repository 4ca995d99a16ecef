"""`mcu demo`: the library on sklearn's digits, end to end, in seconds on a CPU.

Trains a small CNN on all digits (θ_o), forgets one class with MCU on top of random-label unlearning,
prints the curve of candidate models and materialises the recommended point.
"""

from __future__ import annotations

import time

import torch
import typer

from unlearning import JobHooks, Progress, load_digits_dataset, make_unlearning_data, run_unlearning, train_classifier
from unlearning.architectures import seeded_init
from unlearning.data import Subset
from unlearning.metrics import accuracy


def _progress_printer() -> JobHooks:
    last: dict[str, int] = {}

    def show(progress: Progress) -> None:
        step = int(progress.fraction * 10)
        if last.get(progress.phase) != step:
            last[progress.phase] = step
            bar = "#" * step + "." * (10 - step)
            typer.echo(f"\r  {progress.phase:<9} [{bar}] {progress.fraction:4.0%}", nl=step == 10)

    return JobHooks(on_progress=show)


def run_library_demo(forget_class: int = 3, device: str = "auto", base_method: str = "rl") -> None:
    torch.manual_seed(0)
    dataset = load_digits_dataset()
    typer.echo(f"sklearn digits: {len(dataset.train_labels)} train / {len(dataset.test_labels)} test images, "
               f"shape {dataset.input_shape}")
    data = make_unlearning_data(dataset, channels=1, forget_classes=[forget_class])
    model = seeded_init("cnn-small", dataset.num_classes, dataset.input_shape, seed=0)
    started = time.perf_counter()
    train = Subset(dataset.train_inputs, dataset.train_labels, torch.arange(len(dataset.train_labels)))
    train_classifier(model, train, data.adapter, epochs=20, lr=0.05, seed=0)
    typer.echo(f"trained θ_o (cnn-small) in {time.perf_counter() - started:.1f}s: "
               f"test accuracy {accuracy(model, data.test, data.adapter):.3f}")

    typer.echo(f"forgetting class {forget_class} ({len(data.forget)} training images) with MCU({base_method}):")
    result = run_unlearning(model, data, base_method, device=device, hooks=_progress_printer())

    typer.echo("\n    t   forget_acc  retain_acc  test_acc  MIA")
    for p in result.points:
        mark = " <- nearest to recommended t" if p is result.point(result.recommended_t) else ""
        typer.echo(f"  {p.t:4.2f}  {p.forget_accuracy:9.3f}  {p.retain_accuracy:10.3f}  {p.test_accuracy:8.3f}"
                   f"  {p.mia_efficacy:4.2f}{mark}")
    targets = result.targets
    typer.echo(f"targets: retain {targets.retain_accuracy:.3f}, forget {targets.forget_accuracy:.3f}; "
               f"recommended t = {result.recommended_t:.2f}; effective region {result.effective_region}")
    typer.echo(f"mask: {result.mask['kept_share']:.1%} of parameters trainable "
               f"({', '.join(result.mask['kept_tensors'])})")
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items())
    typer.echo(f"time per phase: {timings} (on {result.training['device']})")

    _, metrics = result.materialize(result.recommended_t)
    typer.echo(f"materialised t={result.recommended_t:.2f} with BatchNorm statistics from retain data: "
               f"forget {metrics.forget_accuracy:.3f}, retain {metrics.retain_accuracy:.3f}, "
               f"test {metrics.test_accuracy:.3f}, MIA {metrics.mia_efficacy:.2f}")
