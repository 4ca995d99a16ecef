"""Training the Bézier control point θ_c under the parameter mask (docs/algorithm.md §3).

Per batch: one t ~ U(0, 1); logits = f(x; φ(t)) in train mode; L = CE(retain part) − β·CE(forget part),
with the forget term clamped (divergence guard). Only the mask's trainable tensors of θ_c are leaves that
require grad, so frozen tensors get no weight gradient at all and cost no backward work for them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import Tensor

from unlearning.config import MCUConfig, Targets
from unlearning.curve import BezierCurve, in_layout_of
from unlearning.data import UnlearningData, seeded_generator
from unlearning.distributed import Ranks
from unlearning.mask import ParameterMask
from unlearning.training import (
    Batch,
    BatchPlan,
    DivergenceError,
    JobHooks,
    OptimizeStats,
    optimize,
    part_cross_entropy,
    sgd,
    stratified_batches,
)


def adaptive_beta(retain_accuracy: float, forget_accuracy: float, targets: Targets) -> float:
    """MCU's β rule (accuracies as fractions; the rule only compares ratios, so scale does not matter).

    β = 0 once the forget accuracy is at or below its target c_f. Otherwise β = 0.01 when the retain
    accuracy is relatively further from its target c_r (in either direction) than the forget accuracy
    is from c_f, i.e. (a_f − c_f)/c_f < |a_r − c_r|/c_r: retained knowledge is suffering more than the
    forget set is still known, so forget gently; else β = 0.5. With c_f = 0 (class-wise) the forget
    ratio is +∞ and β = 0.5 while a_f > 0. (The published code used the signed a_r − c_r; as c_r is
    θ_o's own retain accuracy, a_r > c_r almost never held and the 0.01 branch never fired.)
    """
    c_r, c_f = targets.retain_accuracy, targets.forget_accuracy
    a_r, a_f = retain_accuracy, forget_accuracy
    if a_f <= c_f:
        return 0.0
    forget_excess = (a_f - c_f) / c_f if c_f > 0 else float("inf")
    retain_deviation = abs(a_r - c_r) / c_r if c_r > 0 else float("inf")
    return 0.01 if forget_excess < retain_deviation else 0.5


@dataclass
class Checkpoint:
    """θ_c and the SGD momentum after `epoch` epochs. Serialised as safetensors: no pickle anywhere.

    No RNG state is needed: every epoch's randomness is derived from (seed, epoch). `beta_counts` (β
    values used so far, over all epochs), `epoch_losses` and `lr` / `rollbacks` (after divergence rollbacks)
    travel with it; checkpoints written before these fields existed load with empty counts and the config's lr.
    """

    epoch: int
    control: dict[str, Tensor]
    momentum: dict[str, Tensor] = field(default_factory=dict)
    skipped_nonfinite: int = 0
    beta_counts: dict[str, int] = field(default_factory=dict)
    lr: float | None = None
    rollbacks: list[dict[str, float]] = field(default_factory=list)
    epoch_losses: list[float | None] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        tensors = {f"control/{n}": v.detach().cpu().contiguous() for n, v in self.control.items()}
        tensors |= {f"momentum/{n}": v.detach().cpu().contiguous() for n, v in self.momentum.items()}
        meta = {
            "epoch": str(self.epoch),
            "skipped_nonfinite": str(self.skipped_nonfinite),
            "beta_counts": self.beta_counts,
            "lr": self.lr,
            "rollbacks": self.rollbacks,
            "epoch_losses": self.epoch_losses,
        }
        return save_safetensors(tensors, metadata={"mcu_checkpoint": json.dumps(meta)})

    @classmethod
    def from_bytes(cls, blob: bytes) -> Checkpoint:
        tensors = load_safetensors(blob)
        meta = _checkpoint_metadata(blob)
        control = {k.removeprefix("control/"): v for k, v in tensors.items() if k.startswith("control/")}
        momentum = {k.removeprefix("momentum/"): v for k, v in tensors.items() if k.startswith("momentum/")}
        if "epoch" not in meta:
            raise ValueError("not an MCU checkpoint: its safetensors metadata has no mcu_checkpoint epoch")
        beta_counts = {str(k): int(v) for k, v in dict(meta.get("beta_counts") or {}).items()}
        lr = meta.get("lr")
        return cls(
            int(meta["epoch"]),
            control,
            momentum,
            int(meta.get("skipped_nonfinite", 0)),
            beta_counts,
            None if lr is None else float(lr),
            list(meta.get("rollbacks") or []),
            list(meta.get("epoch_losses") or []),
        )


def _checkpoint_metadata(blob: bytes) -> dict[str, Any]:
    """Read the JSON metadata from a safetensors header (8-byte little-endian length, then JSON)."""
    header_len = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + header_len])
    return json.loads(header.get("__metadata__", {}).get("mcu_checkpoint", "{}"))


@dataclass
class ControlPointStats:
    batches: int
    skipped_nonfinite: int
    beta_counts: dict[str, int]
    rollbacks: list[dict[str, float]] = field(default_factory=list)  # {"epoch": failed epoch, "lr": new lr}
    final_lr: float = 0.0
    epoch_losses: list[float | None] = field(default_factory=list)  # mean loss of each epoch, first to last


def train_control_point(
    curve: BezierCurve,
    data: UnlearningData,
    mask: ParameterMask,
    config: MCUConfig,
    targets: Targets,
    hooks: JobHooks | None = None,
    resume: Checkpoint | None = None,
    on_checkpoint: Callable[[Checkpoint], None] | None = None,
) -> ControlPointStats:
    """Train `curve.control` in place for `config.epochs` epochs (or the rest of them, from `resume`).

    Divergence (non-finite weights after an epoch, despite the guard): back to the last good epoch's θ_c
    and momentum, lr halved, at most `config.guard.max_rollbacks` times; then `DivergenceError`.
    """
    hooks = hooks or JobHooks()
    if resume is not None:
        for name, value in resume.control.items():
            curve.control[name] = in_layout_of(curve.start[name], value)
    trainable = {n: curve.control[n].clone().requires_grad_(True) for n in curve.names if n in mask.trainable}
    control = {n: trainable.get(n, curve.control[n]) for n in curve.names}
    params = list(trainable.values())
    lr = resume.lr if resume is not None and resume.lr is not None else config.lr
    optimizer = sgd(params, lr, config.momentum)
    if resume is not None:
        for name, p in trainable.items():
            if name in resume.momentum:
                optimizer.state[p]["momentum_buffer"] = in_layout_of(p, resume.momentum[name])
    grad_masks = {
        id(p): mask.trainable[n].to(p.dtype) for n, p in trainable.items() if not bool(mask.trainable[n].all())
    }

    retain_part = data.retain.sample(
        max(1, round(config.retain_ratio * len(data.retain))), seeded_generator(config.seed, 4)
    )
    beta_counts: dict[str, int] = dict(resume.beta_counts) if resume else {}
    rollbacks: list[dict[str, float]] = list(resume.rollbacks) if resume else []

    t_values: list[float] = []

    def batches_with_t(_epoch: int, generator: torch.Generator) -> BatchPlan:
        plan = stratified_batches(retain_part, data.forget, config.batch_size, data.adapter, generator)
        # One t per batch and rank, from the epoch's generator, so a resumed epoch draws the same values. Each
        # rank of a data-parallel run trains at its own t (a column of its own; one rank: the plain sequence).
        ranks = Ranks.current() or Ranks(0, 1)
        t_values[:] = torch.rand(len(plan), ranks.world, generator=generator)[:, ranks.rank].tolist()[::-1]
        return plan

    def loss_fn(batch: Batch) -> Tensor:
        logits = curve.forward(batch.inputs, t_values.pop(), control)
        forget_loss = part_cross_entropy(logits, batch.labels, batch.is_forget)
        retain_loss = part_cross_entropy(logits, batch.labels, ~batch.is_forget)
        beta = _beta_for_batch(logits.detach(), batch, config, targets)
        beta_counts[str(beta)] = beta_counts.get(str(beta), 0) + 1
        return retain_loss - beta * forget_loss.clamp(max=config.guard.forget_loss_cap)

    stats = OptimizeStats(
        skipped_nonfinite=resume.skipped_nonfinite if resume else 0,
        epoch_losses=list(resume.epoch_losses) if resume else [],
    )

    def snapshot(epochs_done: int) -> Checkpoint:
        momentum = {
            n: optimizer.state[p]["momentum_buffer"].clone()
            for n, p in trainable.items()
            if "momentum_buffer" in optimizer.state[p]
        }
        return Checkpoint(
            epochs_done,
            {n: p.detach().clone() for n, p in trainable.items()},
            momentum,
            stats.skipped_nonfinite,
            dict(beta_counts),
            lr,
            list(rollbacks),
            list(stats.epoch_losses),
        )

    good = snapshot(resume.epoch if resume else 0)

    def end_of_epoch(epochs_done: int, _: OptimizeStats) -> None:
        nonlocal good
        good = snapshot(epochs_done)
        curve.control.update(good.control)
        if on_checkpoint is not None:
            on_checkpoint(dataclasses.replace(good, control=dict(curve.control)))

    curve.model.train()
    while True:
        try:
            optimize(
                params,
                optimizer,
                epochs=config.epochs,
                seed=config.seed,
                make_batches=batches_with_t,
                loss_fn=loss_fn,
                hooks=hooks,
                phase="curve",
                start_epoch=good.epoch,
                grad_clip=config.guard.grad_clip,
                grad_masks=grad_masks,
                on_epoch_end=end_of_epoch,
                stats=stats,
            )
            break
        except DivergenceError as error:
            if len(rollbacks) >= config.guard.max_rollbacks:
                raise DivergenceError(
                    f"curve training diverged (non-finite θ_c in epoch {(error.epoch or 0) + 1}) after "
                    f"{len(rollbacks)} rollback(s) with the lr halved each time (now {lr:g}); lower lr or beta, "
                    "or tighten guard.forget_loss_cap / guard.grad_clip",
                    error.epoch,
                ) from error
            lr /= 2
            rollbacks.append({"epoch": (error.epoch or 0) + 1, "lr": lr})
            _restore(good, trainable, optimizer, lr)
            beta_counts.clear()
            beta_counts.update(good.beta_counts)
    curve.control.update({n: p.detach().clone() for n, p in trainable.items()})
    return ControlPointStats(stats.batches, stats.skipped_nonfinite, beta_counts, rollbacks, lr, stats.epoch_losses)


def _restore(good: Checkpoint, trainable: dict[str, Tensor], optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Put θ_c and the momentum back to `good` and set the optimizer's lr."""
    with torch.no_grad():
        for name, p in trainable.items():
            p.copy_(good.control[name])
            if name in good.momentum:
                optimizer.state[p]["momentum_buffer"] = good.momentum[name].clone()
            else:
                optimizer.state[p].pop("momentum_buffer", None)
    for group in optimizer.param_groups:
        group["lr"] = lr


def _beta_for_batch(logits: Tensor, batch: Batch, config: MCUConfig, targets: Targets) -> float:
    if config.beta != "adaptive":
        return float(config.beta)
    if not batch.is_forget.any():  # a rank's share without forget rows: no forget term to weigh
        return 0.0
    correct = logits.argmax(dim=1) == batch.labels
    retain_rows = ~batch.is_forget
    retain_acc = float(correct[retain_rows].float().mean()) if retain_rows.any() else targets.retain_accuracy
    forget_acc = float(correct[batch.is_forget].float().mean())
    return adaptive_beta(retain_acc, forget_acc, targets)
