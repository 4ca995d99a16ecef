"""Forget/retain/test accuracy, MIA-efficacy and Avg. Gap (MCU.md §6, SalUn convention).

All accuracies are fractions in [0, 1]. Evaluation runs on bounded, seeded subsets (`EvalSets`) that
are drawn once per job, so every point of a curve is measured on the same rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from sklearn.svm import SVC
from torch import Tensor, nn

from unlearning.config import EVAL_BATCH_SIZE, EvalConfig
from unlearning.data import InputAdapter, Subset, UnlearningData, batches, seeded_generator
from unlearning.training import autocast


@dataclass(frozen=True)
class PointMetrics:
    t: float | None
    forget_accuracy: float
    unlearning_accuracy: float
    retain_accuracy: float
    test_accuracy: float
    mia_efficacy: float
    forgotten_class_test_accuracy: float | None = None  # class-wise forgetting only

    def to_dict(self) -> dict:
        return asdict(self)

    def is_finite(self) -> bool:
        values = [v for v in asdict(self).values() if v is not None]
        return bool(np.all(np.isfinite(values)))


@dataclass
class EvalSets:
    """The rows every point is measured on, drawn once per job with the job's seed."""

    retain: Subset  # RA, and MIA members (its first |test| rows)
    forget: Subset  # FA and MIA targets: the whole forget set
    test: Subset  # TA and MIA non-members (retained classes only, for class-wise forgetting)
    forgotten_class_test: Subset | None  # class-wise forgetting only
    bn: Subset  # BatchNorm recomputation: retain rows only

    @classmethod
    def draw(cls, data: UnlearningData, config: EvalConfig, seed: int) -> EvalSets:
        test, forgotten_class_test = data.test, None
        if data.scenario == "classwise":
            test, forgotten_class_test = data.test_split_by_class()
        return cls(
            retain=data.retain.sample(config.retain_samples, seeded_generator(seed, 1)),
            forget=data.forget,
            test=test.sample(config.test_samples, seeded_generator(seed, 2)),
            forgotten_class_test=forgotten_class_test,
            bn=data.retain.sample(config.bn_samples, seeded_generator(seed, 3)),
        )


@torch.no_grad()
def predict(model: nn.Module, data: Subset, adapter: InputAdapter, batch_size: int) -> tuple[Tensor, Tensor]:
    """(correct, confidence of the true label) per row, in eval mode."""
    model.eval()
    correct, confidence = [], []
    for x, y in batches(data, batch_size, adapter):
        with autocast(x.device):
            logits = model(x)
        probs = torch.softmax(logits.float(), dim=1)
        correct.append(probs.argmax(dim=1) == y)
        confidence.append(probs.gather(1, y[:, None]).squeeze(1))
    if not correct:
        return torch.zeros(0, dtype=torch.bool), torch.zeros(0)
    return torch.cat(correct).cpu(), torch.cat(confidence).cpu()


def accuracy(model: nn.Module, data: Subset, adapter: InputAdapter, batch_size: int = EVAL_BATCH_SIZE) -> float:
    correct, _ = predict(model, data, adapter, batch_size)
    return float(correct.float().mean()) if len(correct) else float("nan")


def mia_efficacy(member_confidence: Tensor, nonmember_confidence: Tensor, forget_confidence: Tensor) -> float:
    """Share of forget rows an RBF SVC (C=3, gamma='auto') trained on true-label confidence calls non-member."""
    features = torch.cat([member_confidence, nonmember_confidence]).double().numpy()[:, None]
    labels = np.concatenate([np.ones(len(member_confidence)), np.zeros(len(nonmember_confidence))])
    if not np.all(np.isfinite(features)):
        return float("nan")
    svc = SVC(C=3, gamma="auto", kernel="rbf").fit(features, labels)
    predicted = svc.predict(forget_confidence.double().numpy()[:, None])
    return float(np.mean(predicted == 0))


def evaluate(model: nn.Module, sets: EvalSets, adapter: InputAdapter, batch_size: int,
             t: float | None = None) -> PointMetrics:
    """All metrics of one model (BatchNorm statistics already in place)."""
    retain_correct, retain_conf = predict(model, sets.retain, adapter, batch_size)
    forget_correct, forget_conf = predict(model, sets.forget, adapter, batch_size)
    test_correct, test_conf = predict(model, sets.test, adapter, batch_size)
    forget_acc = float(forget_correct.float().mean())
    forgotten_class_acc = None
    if sets.forgotten_class_test is not None and len(sets.forgotten_class_test):
        forgotten_class_acc = accuracy(model, sets.forgotten_class_test, adapter, batch_size)
    return PointMetrics(
        t=t,
        forget_accuracy=forget_acc,
        unlearning_accuracy=1.0 - forget_acc,
        retain_accuracy=float(retain_correct.float().mean()),
        test_accuracy=float(test_correct.float().mean()),
        mia_efficacy=mia_efficacy(retain_conf[: len(test_conf)], test_conf, forget_conf),
        forgotten_class_test_accuracy=forgotten_class_acc,
    )


GAP_METRICS = ("unlearning_accuracy", "retain_accuracy", "test_accuracy", "mia_efficacy")


def avg_gap(point: PointMetrics, reference: PointMetrics) -> float:
    """Mean absolute difference over UA, RA, TA and MIA-efficacy (fractions; ×100 for points)."""
    return float(np.mean([abs(getattr(point, m) - getattr(reference, m)) for m in GAP_METRICS]))
