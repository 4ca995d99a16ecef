"""The one optimisation loop every phase uses, with progress, cancellation and per-epoch callbacks.

Randomness is derived from (seed, epoch), never carried over from the previous epoch, so a run resumed
at epoch k draws exactly the batches, labels and t values an uninterrupted run would.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unlearning.data import InputAdapter, Subset, seeded_generator
from unlearning.distributed import Ranks, sum_gradients
from unlearning.rows import gathered, loader_workers


class Cancelled(Exception):
    """Raised between batches when the job's cancel check answers true."""


class DivergenceError(RuntimeError):
    """Training produced non-finite weights despite the divergence guard; `epoch` is the 0-based epoch."""

    def __init__(self, message: str, epoch: int | None = None) -> None:
        super().__init__(message)
        self.epoch = epoch


@dataclass(frozen=True)
class Progress:
    phase: str  # mask | base | curve | evaluate
    fraction: float  # of this phase, 0..1
    epoch: int | None = None  # epochs completed so far (1-based while inside an epoch)
    epochs: int | None = None
    overall: float | None = None  # of the whole job, 0..1 (unlearning/work_plan.py); None: not planned


@dataclass
class JobHooks:
    """How a caller watches and steers a job; every hook is optional."""

    on_progress: Callable[[Progress], None] | None = None
    should_cancel: Callable[[], bool] | None = None

    def report(self, progress: Progress) -> None:
        if self.on_progress is not None:
            self.on_progress(progress)

    def check_cancel(self) -> None:
        if self.should_cancel is not None and self.should_cancel():
            raise Cancelled()


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (matmuls and convolutions in bf16, losses and weights in fp32); nothing on CPU."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """The model on `device` in channels_last memory format: faster convolutions on CUDA (with bf16) and on
    the CPU too (oneDNN; `cnn-small` at 3×32×32 on one thread: 1.2× per training batch, 1.4× per BatchNorm
    pass). Only 4-D tensors change layout; the weights a job returns are made contiguous when stored."""
    return model.to(device).to(memory_format=torch.channels_last)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """`auto` (or None) picks CUDA when present, else CPU; anything else is taken as given."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass(frozen=True)
class Batch:
    """Model-ready inputs and labels; `is_forget` marks the rows that come from the forget set. `share`: this
    rank's part of the planned batch's rows (1 without data parallelism)."""

    inputs: Tensor
    labels: Tensor
    is_forget: Tensor
    share: float = 1.0


@dataclass
class BatchPlan:
    """The rows of each batch of an epoch, turned into tensors one batch at a time."""

    retain: Subset
    forget: Subset
    adapter: InputAdapter
    rows: list[tuple[Tensor, Tensor]]  # (retain rows, forget rows) per batch
    augment_seed: int | None = None  # the augmentation's draws (None: the adapter has no augmentation)
    planned_rows: list[int] | None = None  # data-parallel: each batch is this rank's share of this many rows

    def __len__(self) -> int:
        return len(self.rows)

    def shared(self, ranks: Ranks) -> BatchPlan:
        """This rank's share of every batch (retain and forget rows split alike). A batch of fewer rows than
        ranks (at most an epoch's last) is left out on every rank, so that every rank holds rows of each batch."""
        planned = [r for r in self.rows if len(r[0]) + len(r[1]) >= ranks.world]
        rows = [(ranks.share(retain), ranks.share(forget)) for retain, forget in planned]
        return replace(self, rows=rows, planned_rows=[len(r[0]) + len(r[1]) for r in planned])

    def _inputs(self, rows: tuple[Tensor, Tensor]) -> Tensor:
        """One batch's stored inputs, gathered where the rows live (in a loader process when streamed)."""
        return torch.cat(
            [
                self.retain.inputs[rows[0].to(self.retain.labels.device)],
                self.forget.inputs[rows[1].to(self.forget.labels.device)],
            ]
        )

    def __iter__(self) -> Iterator[Batch]:
        device = self.retain.target
        augment = seeded_generator(self.augment_seed) if self.augment_seed is not None else None
        workers = max(loader_workers(self.retain.inputs), loader_workers(self.forget.inputs))
        planned_rows = self.planned_rows or [len(r[0]) + len(r[1]) for r in self.rows]
        for (retain_rows, forget_rows), inputs, planned in zip(
            self.rows, gathered(self._inputs, self.rows, workers), planned_rows, strict=True
        ):
            labels = torch.cat(
                [
                    self.retain.labels[retain_rows.to(self.retain.labels.device)],
                    self.forget.labels[forget_rows.to(self.forget.labels.device)],
                ]
            ).to(device)
            is_forget = torch.cat(
                [
                    torch.zeros(len(retain_rows), dtype=torch.bool, device=device),
                    torch.ones(len(forget_rows), dtype=torch.bool, device=device),
                ]
            )
            inputs = inputs.to(device, non_blocking=True)
            model_input = self.adapter(inputs) if augment is None else self.adapter.augmented(inputs, augment)
            yield Batch(model_input, labels, is_forget, len(labels) / planned)


def plain_batches(
    subset: Subset, batch_size: int, adapter: InputAdapter, generator: torch.Generator, from_forget: bool = False
) -> BatchPlan:
    """Shuffled batches of one subset; `from_forget` marks its rows as forget rows."""
    chunks = list(torch.randperm(len(subset), generator=generator).split(batch_size))
    empty = torch.zeros(0, dtype=torch.int64)
    no_rows = subset.take(empty)
    seed = _augment_seed(adapter, generator)
    if from_forget:
        return BatchPlan(no_rows, subset, adapter, [(empty, c) for c in chunks], seed)
    return BatchPlan(subset, no_rows, adapter, [(c, empty) for c in chunks], seed)


def forget_then_retain_batches(
    retain: Subset, forget: Subset | None, batch_size: int, adapter: InputAdapter, generator: torch.Generator
) -> BatchPlan:
    """Shuffled batches of forget rows only (none when `forget` is None), then shuffled batches of retain rows
    only: an epoch of two passes, as SCRUB's."""
    empty = torch.zeros(0, dtype=torch.int64)
    rows = []
    if forget is not None:
        rows += [(empty, chunk) for chunk in torch.randperm(len(forget), generator=generator).split(batch_size)]
    rows += [(chunk, empty) for chunk in torch.randperm(len(retain), generator=generator).split(batch_size)]
    forget = forget if forget is not None else retain.take(empty)
    return BatchPlan(retain, forget, adapter, rows, _augment_seed(adapter, generator))


def _augment_seed(adapter: InputAdapter, generator: torch.Generator) -> int | None:
    """A seed for the epoch's augmentation, drawn from the epoch's generator (only when there is augmentation,
    so plans without it shuffle exactly as before)."""
    if adapter.augmentation is None:
        return None
    return int(torch.randint(0, 2**62, (1,), generator=generator))


def stratified_batches(
    retain: Subset, forget: Subset, batch_size: int, adapter: InputAdapter, generator: torch.Generator
) -> BatchPlan:
    """Shuffled batches over retain ∪ forget where every batch holds forget rows.

    Forget rows are spread evenly over the batches; when there are fewer forget rows than batches they
    are reused (each pass freshly shuffled), so no batch ever lacks them (the reference code produced NaN
    losses on such batches).
    """
    n_batches = max(1, math.ceil((len(retain) + len(forget)) / batch_size))
    forget_order = torch.randperm(len(forget), generator=generator)
    while len(forget_order) < n_batches:
        forget_order = torch.cat([forget_order, torch.randperm(len(forget), generator=generator)])
    retain_chunks = torch.randperm(len(retain), generator=generator).tensor_split(n_batches)
    forget_chunks = forget_order.tensor_split(n_batches)
    return BatchPlan(
        retain, forget, adapter, list(zip(retain_chunks, forget_chunks, strict=True)), _augment_seed(adapter, generator)
    )


def part_cross_entropy(logits: Tensor, labels: Tensor, rows: Tensor) -> Tensor:
    """Mean cross-entropy over the `rows` (a bool mask) of a batch; 0 when there are none (a rank's share of a
    mixed batch may lack one part), where F.cross_entropy's mean would be NaN."""
    return F.cross_entropy(logits[rows], labels[rows], reduction="sum") / rows.sum().clamp(min=1)


LossFn = Callable[[Batch], Tensor]
BatchesFn = Callable[[int, torch.Generator], BatchPlan]  # (epoch, the epoch's generator)


@dataclass
class OptimizeStats:
    batches: int = 0
    skipped_nonfinite: int = 0
    epoch_losses: list[float | None] = field(default_factory=list)  # mean stepped loss per epoch; None: none stepped


def optimize(
    params: Sequence[Tensor],  # parameters, or tensors trained in their place (mcu.py's θ_c)
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    seed: int,
    make_batches: BatchesFn,
    loss_fn: LossFn,
    hooks: JobHooks,
    phase: str,
    start_epoch: int = 0,
    grad_clip: float | None = None,
    grad_masks: dict[int, Tensor] | None = None,
    on_epoch_end: Callable[[int, OptimizeStats], None] | None = None,
    stats: OptimizeStats | None = None,
) -> OptimizeStats:
    """Run `epochs` epochs of `loss_fn` over `make_batches(epoch, generator)` (epoch from 0, once each, in order).

    A batch with a non-finite loss is skipped (counted, never stepped). `grad_masks` (keyed by id of a
    parameter) zeroes gradient elements that must not move. `on_epoch_end(epochs_done, stats)` runs after
    each epoch, e.g. to write a checkpoint. `stats`, when given, is updated in place (so a caller keeps
    the counts of an attempt that ends in `DivergenceError`).
    """
    stats = stats if stats is not None else OptimizeStats()
    ranks = Ranks.current()
    for epoch in range(start_epoch, epochs):
        generator = seeded_generator(seed, epoch)
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))  # dropout and the like
        epoch_batches = make_batches(epoch, generator)
        if ranks is not None:
            epoch_batches = epoch_batches.shared(ranks)
        loss_sum, stepped = torch.zeros(()), 0  # for the epoch's mean loss (stats.epoch_losses)
        for index, batch in enumerate(epoch_batches):
            hooks.check_cancel()
            optimizer.zero_grad(set_to_none=True)
            with autocast(batch.inputs.device):
                loss = loss_fn(batch)
            finite = bool(torch.isfinite(loss))
            if ranks is None and not finite:
                stats.skipped_nonfinite += 1
                continue
            # Weighted by the rank's share of the batch's rows, the ranks' gradients sum to the batch's. Every rank
            # runs backward, a non-finite one too: synced BatchNorm's backward is a collective.
            (loss * batch.share).backward()
            if ranks is not None and sum_gradients(params, skip=not finite):
                stats.skipped_nonfinite += 1
                continue
            if grad_masks:
                for p in params:
                    if p.grad is not None and id(p) in grad_masks:
                        p.grad.mul_(grad_masks[id(p)])
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            optimizer.step()
            stats.batches += 1
            loss_sum, stepped = loss_sum.to(loss.device) + loss.detach().float(), stepped + 1  # rank 0's, when shared
            hooks.report(Progress(phase, (epoch + (index + 1) / len(epoch_batches)) / epochs, epoch + 1, epochs))
        if not all(torch.isfinite(p).all() for p in params):
            raise DivergenceError(f"{phase}: weights became non-finite in epoch {epoch + 1}", epoch)
        stats.epoch_losses.append(round(float(loss_sum) / stepped, 6) if stepped else None)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, stats)
    return stats


def sgd(params: Sequence[Tensor], lr: float, momentum: float, weight_decay: float = 0.0) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def train_classifier(
    model: nn.Module,
    data: Subset,
    adapter: InputAdapter,
    *,
    epochs: int,
    lr: float,
    batch_size: int = 128,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    seed: int = 0,
    hooks: JobHooks | None = None,
    phase: str = "train",
) -> nn.Module:
    """Plain supervised training with SGD and a cosine schedule stepped per epoch (θ_o, retrain)."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = sgd(params, lr, momentum, weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs))
    optimize(
        params,
        optimizer,
        epochs=epochs,
        seed=seed,
        phase=phase,
        hooks=hooks or JobHooks(),
        make_batches=lambda _, g: plain_batches(data, batch_size, adapter, g, from_forget=False),
        loss_fn=lambda b: F.cross_entropy(model(b.inputs), b.labels),
        on_epoch_end=lambda *_: schedule.step(),
    )
    return model
