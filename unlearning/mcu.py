"""Training the Bézier control point θ_c under the parameter mask (MCU.md §3).

Per batch: one t ~ U(0, 1); logits = f(x; φ(t)) in train mode; L = CE(retain part) − β·CE(forget part),
with the forget term clamped (divergence guard). Only the mask's trainable tensors of θ_c are leaves that
require grad, so frozen tensors get no weight gradient at all and cost no backward work for them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import Tensor

from unlearning.config import MCUConfig, Targets
from unlearning.curve import BezierCurve
from unlearning.data import UnlearningData, seeded_generator
from unlearning.mask import ParameterMask
from unlearning.training import Batch, BatchPlan, JobHooks, OptimizeStats, optimize, sgd, stratified_batches


def adaptive_beta(retain_accuracy: float, forget_accuracy: float, targets: Targets) -> float:
    """MCU's β rule (accuracies as fractions; the rule only compares ratios, so scale does not matter).

    β = 0 once the forget accuracy is at or below its target; β = 0.01 while the forget accuracy is
    relatively closer to its target than the retain accuracy is to its own; else β = 0.5.
    """
    c_r, c_f = targets.retain_accuracy, targets.forget_accuracy
    a_r, a_f = retain_accuracy, forget_accuracy
    if a_f <= c_f:
        return 0.0
    forget_excess = (a_f - c_f) / c_f if c_f > 0 else float("inf")
    retain_excess = (a_r - c_r) / c_r if c_r > 0 else float("inf")
    return 0.01 if forget_excess < retain_excess else 0.5


@dataclass
class Checkpoint:
    """θ_c and the SGD momentum after `epoch` epochs. Serialised as safetensors: no pickle anywhere.

    No RNG state is needed: every epoch's randomness is derived from (seed, epoch).
    """

    epoch: int
    control: dict[str, Tensor]
    momentum: dict[str, Tensor] = field(default_factory=dict)
    skipped_nonfinite: int = 0

    def to_bytes(self) -> bytes:
        tensors = {f"control/{n}": v.detach().cpu().contiguous() for n, v in self.control.items()}
        tensors |= {f"momentum/{n}": v.detach().cpu().contiguous() for n, v in self.momentum.items()}
        meta = {"epoch": str(self.epoch), "skipped_nonfinite": str(self.skipped_nonfinite)}
        return save_safetensors(tensors, metadata={"mcu_checkpoint": json.dumps(meta)})

    @classmethod
    def from_bytes(cls, blob: bytes) -> Checkpoint:
        tensors = load_safetensors(blob)
        meta = _checkpoint_metadata(blob)
        control = {k.removeprefix("control/"): v for k, v in tensors.items() if k.startswith("control/")}
        momentum = {k.removeprefix("momentum/"): v for k, v in tensors.items() if k.startswith("momentum/")}
        return cls(int(meta["epoch"]), control, momentum, int(meta.get("skipped_nonfinite", 0)))


def _checkpoint_metadata(blob: bytes) -> dict[str, str]:
    """Read the JSON metadata from a safetensors header (8-byte little-endian length, then JSON)."""
    header_len = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + header_len])
    return json.loads(header.get("__metadata__", {}).get("mcu_checkpoint", "{}"))


@dataclass
class ControlPointStats:
    batches: int
    skipped_nonfinite: int
    beta_counts: dict[str, int]


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
    """Train `curve.control` in place for `config.epochs` epochs (or the rest of them, from `resume`)."""
    hooks = hooks or JobHooks()
    if resume is not None:
        for name, value in resume.control.items():
            curve.control[name] = value.to(curve.start[name].device)
    device = curve.start[curve.names[0]].device
    trainable = {n: curve.control[n].clone().requires_grad_(True) for n in curve.names if n in mask.trainable}
    control = {n: trainable.get(n, curve.control[n]) for n in curve.names}
    params = list(trainable.values())
    optimizer = sgd(params, config.lr, config.momentum)
    if resume is not None:
        for name, p in trainable.items():
            if name in resume.momentum:
                optimizer.state[p]["momentum_buffer"] = resume.momentum[name].to(device)
    grad_masks = {id(p): mask.trainable[n].to(p.dtype) for n, p in trainable.items()
                  if not bool(mask.trainable[n].all())}

    retain_part = data.retain.sample(max(1, round(config.retain_ratio * len(data.retain))),
                                     seeded_generator(config.seed, 4))
    beta_counts: dict[str, int] = {}

    t_values: list[float] = []

    def batches_with_t(generator: torch.Generator) -> BatchPlan:
        plan = stratified_batches(retain_part, data.forget, config.batch_size, data.adapter, generator)
        # One t per batch, from the epoch's generator, so a resumed epoch draws the same values.
        t_values[:] = torch.rand(len(plan), generator=generator).tolist()[::-1]
        return plan

    def loss_fn(batch: Batch) -> Tensor:
        logits = curve.forward(batch.inputs, t_values.pop(), control)
        retain_rows, forget_rows = ~batch.is_forget, batch.is_forget
        forget_loss = F.cross_entropy(logits[forget_rows], batch.labels[forget_rows])
        retain_loss = (F.cross_entropy(logits[retain_rows], batch.labels[retain_rows])
                       if retain_rows.any() else logits.sum() * 0.0)
        beta = _beta_for_batch(logits.detach(), batch, config, targets)
        beta_counts[str(beta)] = beta_counts.get(str(beta), 0) + 1
        return retain_loss - beta * forget_loss.clamp(max=config.guard.forget_loss_cap)

    skipped_before = resume.skipped_nonfinite if resume else 0

    def checkpoint(epochs_done: int, stats: OptimizeStats) -> None:
        curve.control.update({n: p.detach().clone() for n, p in trainable.items()})
        if on_checkpoint is not None:
            momentum = {n: optimizer.state[p]["momentum_buffer"] for n, p in trainable.items()
                        if "momentum_buffer" in optimizer.state[p]}
            on_checkpoint(Checkpoint(epochs_done, dict(curve.control), momentum,
                                     skipped_before + stats.skipped_nonfinite))

    curve.model.train()
    stats = optimize(params, optimizer, epochs=config.epochs, seed=config.seed, make_batches=batches_with_t,
                     loss_fn=loss_fn, hooks=hooks, phase="curve", start_epoch=resume.epoch if resume else 0,
                     grad_clip=config.guard.grad_clip, grad_masks=grad_masks, on_epoch_end=checkpoint)
    curve.control.update({n: p.detach().clone() for n, p in trainable.items()})
    return ControlPointStats(stats.batches, skipped_before + stats.skipped_nonfinite, beta_counts)


def _beta_for_batch(logits: Tensor, batch: Batch, config: MCUConfig, targets: Targets) -> float:
    if config.beta != "adaptive":
        return float(config.beta)
    correct = logits.argmax(dim=1) == batch.labels
    retain_rows = ~batch.is_forget
    retain_acc = float(correct[retain_rows].float().mean()) if retain_rows.any() else targets.retain_accuracy
    forget_acc = float(correct[batch.is_forget].float().mean())
    return adaptive_beta(retain_acc, forget_acc, targets)
