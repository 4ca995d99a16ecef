"""The two-stage parameter mask: which parts of θ_c may move (docs/algorithm.md §2).

Scores come from gradients at θ_o in eval mode, summed over one pass of retain and one of forget data.
Stage 1 excludes what matters most to retained knowledge (top s_r, up to `retain_filter` of all
elements); stage 2 keeps, among the rest, what matters most to the forget loss (top s_f, up to
`forget_reserve` of all elements). Per tensor, per element, or "auto": per tensor when that meets
both budgets within `share_tolerance`, else per element (MaskConfig).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unlearning.config import MaskConfig
from unlearning.data import InputAdapter, Subset, batches
from unlearning.training import JobHooks, Progress


@dataclass
class ParameterMask:
    """Per-parameter element masks (1 = trainable in θ_c). A tensor absent from `trainable` is frozen."""

    granularity: str
    trainable: dict[str, Tensor]  # name -> bool tensor of the parameter's shape, only if any element is kept
    sizes: dict[str, int]
    excluded_elements: int

    @property
    def total(self) -> int:
        return sum(self.sizes.values())

    @property
    def kept_elements(self) -> int:
        return int(sum(int(m.sum()) for m in self.trainable.values()))

    @property
    def kept_share(self) -> float:
        return self.kept_elements / self.total

    def report(self) -> dict:
        """What every job records: the kept tensors (with their kept share) and the overall shares."""
        return {
            "granularity": self.granularity,
            "kept_share": round(self.kept_share, 6),
            "excluded_share": round(self.excluded_elements / self.total, 6),
            "tensors_touched": len(self.trainable),
            "tensors_total": len(self.sizes),
            "kept_tensors": {n: round(float(m.float().mean()), 6) for n, m in self.trainable.items()},
            "frozen_tensors": [n for n in self.sizes if n not in self.trainable],
        }

    @classmethod
    def everything(cls, model: nn.Module) -> ParameterMask:
        params = dict(model.named_parameters())
        return cls(
            "tensor",
            {n: torch.ones_like(p, dtype=torch.bool) for n, p in params.items()},
            {n: p.numel() for n, p in params.items()},
            0,
        )


def accumulated_gradients(
    model: nn.Module,
    data: Subset,
    adapter: InputAdapter,
    batch_size: int,
    sign: float,
    hooks: JobHooks,
    fraction: tuple[float, float],
) -> dict[str, Tensor]:
    """Σ over batches of ∇(sign · CE(batch)) at the model's current weights, in eval mode."""
    model.eval()
    params = dict(model.named_parameters())
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    n_batches = max(1, -(-len(data) // batch_size))
    for index, (x, y) in enumerate(batches(data, batch_size, adapter)):
        hooks.check_cancel()
        grads = torch.autograd.grad(sign * F.cross_entropy(model(x), y), list(params.values()), allow_unused=True)
        for name, g in zip(params, grads, strict=True):
            if g is not None:
                total[name] += g
        start, span = fraction
        hooks.report(Progress("mask", start + span * (index + 1) / n_batches))
    return total


def _walk_until(order: list[str], sizes: dict[str, int], budget: float) -> list[str]:
    """The prefix of `order` whose element count comes nearest to `budget`.

    Taken literally, "walk until the count reaches the budget" swallows a dominant tensor whole (on
    `cnn-small` one linear layer is 91% of the weights, so a 10% retain filter would exclude everything).
    The tensor that crosses the budget is taken only if that lands nearer to it, so the share stays
    within one tensor of the budget either way.
    """
    taken, count = [], 0
    for name in order:
        if count >= budget:
            break
        if abs(count + sizes[name] - budget) > abs(count - budget):
            break
        taken.append(name)
        count += sizes[name]
    return taken


def tensor_mask(grad_retain: dict[str, Tensor], grad_forget: dict[str, Tensor], config: MaskConfig) -> ParameterMask:
    """Per-tensor scores s = ‖G‖₂ / numel; stage 1 excludes by s_r, stage 2 keeps by s_f."""
    sizes = {n: g.numel() for n, g in grad_retain.items()}
    total = sum(sizes.values())
    s_r = {n: float(g.norm()) / sizes[n] for n, g in grad_retain.items()}
    s_f = {n: float(g.norm()) / sizes[n] for n, g in grad_forget.items()}
    excluded = _walk_until(sorted(sizes, key=lambda n: -s_r[n]), sizes, config.retain_filter * total)
    rest = [n for n in sorted(sizes, key=lambda n: -s_f[n]) if n not in set(excluded)]
    kept = _walk_until(rest, sizes, config.forget_reserve * total)
    trainable = {n: torch.ones_like(grad_retain[n], dtype=torch.bool) for n in kept}
    return ParameterMask("tensor", trainable, sizes, sum(sizes[n] for n in excluded))


def element_mask(grad_retain: dict[str, Tensor], grad_forget: dict[str, Tensor], config: MaskConfig) -> ParameterMask:
    """The same two stages with per-element scores |G| (for models where one tensor dominates)."""
    names = list(grad_retain)
    sizes = {n: grad_retain[n].numel() for n in names}
    total = sum(sizes.values())
    s_r = torch.cat([grad_retain[n].abs().flatten() for n in names])
    s_f = torch.cat([grad_forget[n].abs().flatten() for n in names])
    n_excluded = round(config.retain_filter * total)
    available = torch.ones(total, dtype=torch.bool, device=s_r.device)
    available[torch.topk(s_r, n_excluded).indices] = False
    n_kept = min(round(config.forget_reserve * total), int(available.sum()))
    keep = torch.zeros(total, dtype=torch.bool, device=s_r.device)
    keep[torch.topk(torch.where(available, s_f, -1.0), n_kept).indices] = True
    trainable = {}
    for name, part in zip(names, keep.split([sizes[n] for n in names]), strict=True):
        if part.any():
            trainable[name] = part.view_as(grad_retain[name])
    return ParameterMask("element", trainable, sizes, n_excluded)


def compute_mask(
    model: nn.Module,
    retain: Subset,
    forget: Subset,
    adapter: InputAdapter,
    config: MaskConfig,
    batch_size: int,
    hooks: JobHooks | None = None,
) -> ParameterMask:
    """The mask of docs/algorithm.md §2 for `model` at its current weights (θ_o)."""
    hooks = hooks or JobHooks()
    grad_retain = accumulated_gradients(model, retain, adapter, batch_size, 1.0, hooks, (0.0, 0.5))
    grad_forget = accumulated_gradients(model, forget, adapter, batch_size, -1.0, hooks, (0.5, 0.5))
    return compute_budgeted(grad_retain, grad_forget, config)


def compute_budgeted(
    grad_retain: dict[str, Tensor], grad_forget: dict[str, Tensor], config: MaskConfig
) -> ParameterMask:
    """The mask of `config.granularity` from accumulated gradients ("auto": per tensor if within budget)."""
    if config.granularity == "element":
        return element_mask(grad_retain, grad_forget, config)
    mask = tensor_mask(grad_retain, grad_forget, config)
    if config.granularity == "tensor" or meets_budget(mask, config):
        return mask
    return element_mask(grad_retain, grad_forget, config)


def meets_budget(mask: ParameterMask, config: MaskConfig) -> bool:
    """Whether the excluded and kept shares both lie within `share_tolerance` of their budgets."""
    excluded = mask.excluded_elements / mask.total
    kept_budget = min(config.forget_reserve, 1.0 - excluded)
    return (
        abs(excluded - config.retain_filter) <= config.share_tolerance
        and abs(mask.kept_share - kept_budget) <= config.share_tolerance
    )
