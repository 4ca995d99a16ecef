"""Per-sample membership inference: offline LiRA (Carlini et al. 2022, "Membership Inference Attacks From First
Principles"; the OUT-only variant Hayes et al., SaTML 2025, use for unlearning).

Shadow models are trained from scratch on seeded halves of the retain rows, so no forget or test row is ever in
one: each gives, per row, the true-class logit a model shows for a row it never trained on. A row's score is
how far above that distribution the audited model's logit lies, in standard deviations: a forget row the model
still remembers scores high, one it never saw (or truly erased) like a test row. Non-members should come from
the forget rows' distribution (class-wise: test rows of the forgotten classes).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from unlearning.data import InputAdapter, Subset, batches, seeded_generator
from unlearning.training import JobHooks, autocast, train_classifier

# Below this many shadows a per-row standard deviation is too noisy: one pooled over every row and shadow
# (the paper's "fixed variance" for few shadows).
PER_ROW_VARIANCE_SHADOWS = 8
EXPOSED_PERCENTILE = 0.95
_SHADOW_ROWS = 201  # seed stream of the shadows' halves (after the job's seed)


@dataclass(frozen=True)
class MembershipScores:
    forget: Tensor  # one score per forget row
    test: Tensor  # one score per non-member row
    shadow_models: int

    def summary(self) -> dict[str, Any]:
        """Quantiles and worst decile of each set, and `exposed_share`: the share of forget rows scoring above 95%
        of the non-members (0.05 for rows like the non-members; near 1 for rows the model remembers)."""
        threshold = torch.quantile(self.test, EXPOSED_PERCENTILE)
        return {
            "forget": _distribution(self.forget),
            "test": _distribution(self.test),
            "exposed_share": round(float((self.forget > threshold).float().mean()), 4),
            "rows": {"forget": len(self.forget), "test": len(self.test)},
            "shadow_models": self.shadow_models,
        }


def _distribution(scores: Tensor) -> dict[str, float]:
    worst = torch.sort(scores, descending=True).values[: max(1, len(scores) // 10)]
    p10, p50, p90 = torch.quantile(scores, torch.tensor([0.1, 0.5, 0.9], dtype=scores.dtype)).tolist()
    return {
        "p10": round(p10, 4),
        "p50": round(p50, 4),
        "p90": round(p90, 4),
        "worst_decile": round(float(worst.mean()), 4),
    }


def train_shadow_models(
    model: nn.Module,
    retain: Subset,
    adapter: InputAdapter,
    *,
    count: int,
    epochs: int = 10,
    lr: float = 0.05,
    batch_size: int = 128,
    seed: int = 0,
    hooks: JobHooks | None = None,
) -> list[nn.Module]:
    """`count` fresh copies of `model`'s architecture, each trained from scratch on a seeded half of `retain`
    (`shadow_rows` names which)."""
    shadows = []
    for index in range(count):
        shadow = copy.deepcopy(model).requires_grad_(True)  # a curve's working model comes frozen
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=seeded_generator(seed, _SHADOW_ROWS, index, 1))))
        for module in shadow.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
        rows = retain.take(shadow_rows(len(retain), seed, index))
        train_classifier(
            shadow,
            rows,
            adapter,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            seed=seed + index,
            hooks=hooks,
            phase="shadow_models",
        )
        shadows.append(shadow.eval())
    return shadows


def shadow_rows(retain_rows: int, seed: int, index: int) -> Tensor:
    """The positions (in the retain set) shadow `index` trains on: a seeded half."""
    return torch.randperm(retain_rows, generator=seeded_generator(seed, _SHADOW_ROWS, index))[: retain_rows // 2]


@torch.no_grad()
def true_class_logit(model: nn.Module, rows: Subset, adapter: InputAdapter, batch_size: int = 256) -> Tensor:
    """φ = log(p_y / (1 − p_y)) per row, computed stably from the logits as logit_y − logsumexp(other logits)."""
    model.eval()
    scores = []
    for x, y in batches(rows, batch_size, adapter):
        with autocast(x.device):
            logits = model(x)
        logits = logits.double()
        true = logits.gather(1, y[:, None]).squeeze(1)
        others = logits.scatter(1, y[:, None], float("-inf"))
        scores.append((true - torch.logsumexp(others, dim=1)).cpu())
    return torch.cat(scores) if scores else torch.zeros(0, dtype=torch.float64)


def lira_scores(target: Tensor, shadows: Tensor) -> Tensor:
    """(φ_target − μ_out) / σ_out per row; `shadows` is [shadow, row]. σ per row from 8 shadows on (floor 1e-3),
    else one pooled over every row and shadow."""
    mean = shadows.mean(dim=0)
    if len(shadows) >= PER_ROW_VARIANCE_SHADOWS:
        spread = shadows.std(dim=0).clamp_min(1e-3)
    else:
        spread = (shadows - mean).pow(2).mean().sqrt().clamp_min(1e-3).expand_as(mean)
    return (target - mean) / spread


def membership_scores(
    model: nn.Module,
    shadows: Sequence[nn.Module],
    forget: Subset,
    test: Subset,
    adapter: InputAdapter,
    batch_size: int = 256,
) -> MembershipScores:
    """Every forget and non-member row's score for `model` against the shadows' OUT distribution."""

    def scores(rows: Subset) -> Tensor:
        outs = torch.stack([true_class_logit(s, rows, adapter, batch_size) for s in shadows])
        return lira_scores(true_class_logit(model, rows, adapter, batch_size), outs)

    return MembershipScores(scores(forget), scores(test), len(shadows))
