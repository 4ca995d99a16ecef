"""Forget/retain/test accuracy, MIA-efficacy and Avg. Gap (docs/algorithm.md §6, SalUn convention).

All accuracies are fractions in [0, 1], each with its binomial standard error over the rows it was
measured on. Grid points are measured on every forget row and bounded, seeded, class-stratified samples of
retain and test rows (`EvalSets.draw`), drawn once per job, so every point of a curve is measured on the same
rows; the recommended point and a published version on every row (`EvalSets.every_row`). docs/evaluation.md.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

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
    std_errors: dict[str, float] = field(default_factory=dict)  # {metric: sqrt(p(1 − p) / n)}
    rows: dict[str, int] = field(default_factory=dict)  # {split: rows measured}: forget, retain, test(, ...)

    def to_dict(self) -> dict:
        return asdict(self)

    def is_finite(self) -> bool:
        values = [v for v in asdict(self).values() if isinstance(v, float)] + list(self.std_errors.values())
        return bool(np.all(np.isfinite(values)))


# The split whose rows each metric is a share of: its standard error's n. MIA efficacy is the share of forget
# rows the attack calls non-member (the attack's own training rows add variance this does not count).
SPLIT_OF = {
    "forget_accuracy": "forget",
    "unlearning_accuracy": "forget",
    "retain_accuracy": "retain",
    "test_accuracy": "test",
    "mia_efficacy": "forget",
    "forgotten_class_test_accuracy": "forgotten_class_test",
}


def std_error(share: float, rows: int) -> float:
    """The binomial standard error of a share of `rows` rows."""
    return math.sqrt(share * (1.0 - share) / rows) if rows else float("nan")


def class_quotas(sizes: list[int], count: int) -> list[int]:
    """Rows per class of a `count`-row sample of classes with `sizes` rows (count < their sum): shares
    proportional to the sizes, rounded by largest remainder so they sum to exactly `count` (ties: the lower
    class), then every class at least one row when `count` allows, taken from the class most above its share."""
    total = sum(sizes)
    quotas = [count * size // total for size in sizes]
    remainders = [count * size % total for size in sizes]  # integers: exact, whatever the sizes
    for i in sorted(range(len(sizes)), key=lambda i: -remainders[i])[: count - sum(quotas)]:
        quotas[i] += 1
    if count >= len(sizes):
        for i in [i for i, q in enumerate(quotas) if q == 0]:
            donor = max((j for j, q in enumerate(quotas) if q > 1), key=lambda j: quotas[j] * total - count * sizes[j])
            quotas[donor] -= 1
            quotas[i] = 1
    return quotas


def stratified_sample(subset: Subset, count: int, generator: torch.Generator) -> Subset:
    """A seeded, class-stratified sample of `count` rows (the whole subset, in order, when it has no more):
    per class `class_quotas` rows, chosen by a seeded permutation, the whole in a seeded random order (so
    that any prefix, such as the MIA's members, mixes the classes). Labels only are read: streamed inputs
    stay where they are."""
    if count >= len(subset):
        return subset
    labels = subset.labels.cpu()
    sizes = torch.unique(labels, return_counts=True)[1]  # per class, in class order
    by_class = torch.sort(labels, stable=True).indices.split(sizes.tolist())  # each class's rows
    chosen = torch.cat(
        [
            rows[torch.randperm(len(rows), generator=generator)[:quota]]
            for rows, quota in zip(by_class, class_quotas(sizes.tolist(), count), strict=True)
        ]
    )
    return subset.take(chosen[torch.randperm(len(chosen), generator=generator)])


@dataclass
class EvalSets:
    """The rows a point is measured on, drawn once per job with the job's seed."""

    retain: Subset  # RA, and MIA members (its first |test| rows) unless `attack` names them
    forget: Subset  # FA and MIA targets: the whole forget set
    test: Subset  # TA and MIA non-members (retained classes only, for class-wise forgetting)
    forgotten_class_test: Subset | None  # class-wise forgetting only
    bn: Subset  # BatchNorm recomputation: retain rows only
    attack: tuple[Subset, Subset] | None = None  # (members, non-members) the MIA's SVC is trained on

    @classmethod
    def draw(cls, data: UnlearningData, config: EvalConfig, seed: int) -> EvalSets:
        """Grid points: every forget row, class-stratified samples of retain and test rows."""
        test, forgotten_class_test = _test_splits(data)
        return cls(
            retain=stratified_sample(data.retain, config.retain_rows, seeded_generator(seed, 1)),
            forget=data.forget,
            test=stratified_sample(test, config.test_rows, seeded_generator(seed, 2)),
            forgotten_class_test=forgotten_class_test,
            bn=data.retain.sample(config.bn_samples, seeded_generator(seed, 3)),
        )

    def every_row(self, data: UnlearningData) -> EvalSets:
        """The recommended point and a published version: every retain, test and forget row of `data` (the data
        this sample was drawn from); BatchNorm rows as for the grid. The MIA's SVC is still trained on this sample's
        members and non-members, then applied to every forget row: an RBF SVC's fit grows faster than
        quadratically in its rows (0.06 s on 2,000 rows, 4.5 s on 16,000, about a minute extrapolated to 64,000;
        docs/evaluation.md)."""
        test, forgotten_class_test = _test_splits(data)
        return EvalSets(
            retain=data.retain,
            forget=data.forget,
            test=test,
            forgotten_class_test=forgotten_class_test,
            bn=self.bn,
            attack=self.attack_rows(),
        )

    def attack_rows(self) -> tuple[Subset, Subset]:
        """(members, non-members) the MIA's SVC is trained on: `attack` where given, else the first |test| retain
        rows and the test rows."""
        return self.attack or (self.retain.take(torch.arange(min(len(self.retain), len(self.test)))), self.test)

    def share(self, part: int, parts: int, batch_size: int) -> EvalSets:
        """Part `part` (0-based) of `parts` of the measured rows, for a full-set measurement shared by processes
        (worker/grid.py): contiguous slices of each split cut at multiples of `batch_size`, so every batch is one
        the whole measurement runs (the same batches give the same predictions); the BatchNorm and attack rows
        whole, as the attack must be the same in every part."""
        if self.attack is None:
            raise ValueError("only a full-set measurement is shared: its attack rows are fixed")

        def cut(subset: Subset) -> Subset:
            batches = math.ceil(len(subset) / batch_size)
            start, stop = (min(len(subset), batch_size * (batches * k // parts)) for k in (part, part + 1))
            return subset.take(torch.arange(start, stop))

        forgotten = self.forgotten_class_test
        return replace(
            self,
            retain=cut(self.retain),
            forget=cut(self.forget),
            test=cut(self.test),
            forgotten_class_test=cut(forgotten) if forgotten is not None else None,
        )


def _test_splits(data: UnlearningData) -> tuple[Subset, Subset | None]:
    """(test rows, test rows of the forgotten classes): class-wise forgetting measures TA on retained classes."""
    return data.test_split_by_class() if data.scenario == "classwise" else (data.test, None)


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
    called = called_nonmember(member_confidence, nonmember_confidence, forget_confidence)
    return called / len(forget_confidence) if called is not None and len(forget_confidence) else float("nan")


def called_nonmember(member_confidence: Tensor, nonmember_confidence: Tensor, forget_confidence: Tensor) -> int | None:
    """How many forget rows the attack's SVC calls non-member; None when its training features are not finite."""
    features = torch.cat([member_confidence, nonmember_confidence]).double().numpy()[:, None]
    labels = np.concatenate([np.ones(len(member_confidence)), np.zeros(len(nonmember_confidence))])
    if not np.all(np.isfinite(features)):
        return None
    if not len(forget_confidence):
        return 0
    svc = SVC(C=3, gamma="auto", kernel="rbf").fit(features, labels)
    return int(np.sum(svc.predict(forget_confidence.double().numpy()[:, None]) == 0))


ATTACK_RESAMPLES = 8


def attack_spread(member_confidence: Tensor, nonmember_confidence: Tensor) -> float:
    """How much the attack's answer depends on which rows its SVC was trained on: the standard deviation of the share
    of the non-members called non-member, over SVCs trained on seeded bootstrap resamples of the members and
    non-members (nan when the features are not finite).

    Where the confidences tell members from non-members the answer is stable (0.000–0.010 on digits and MNIST-5k).
    Where they do not (a model that does not overfit, as on Fashion-MNIST), an SVC settles on one of two opposite
    boundaries and the same rows are called non-member 15–25% or 75–90% of the time (0.20–0.35): one MIA efficacy is
    then a draw, not a property of the model (docs/benchmarks.md, "The MIA target")."""
    rng = np.random.default_rng(0)
    m, n = len(member_confidence), len(nonmember_confidence)
    shares = []
    for _ in range(ATTACK_RESAMPLES):
        members, nonmembers = member_confidence[rng.integers(0, m, m)], nonmember_confidence[rng.integers(0, n, n)]
        called = called_nonmember(members, nonmembers, nonmember_confidence)
        if called is None or not n:
            return float("nan")
        shares.append(called / n)
    return float(np.std(shares))


@dataclass(frozen=True)
class PointCounts:
    """What a point's metrics are made of, per split (forget, retain, test, forgotten_class_test): rows measured and
    rows predicted right, and the forget rows the attack calls non-member (None: the attack's features were not
    finite). Counts of parts of the rows add up to the counts of the whole (`EvalSets.share`)."""

    t: float | None
    rows: dict[str, int]
    correct: dict[str, int]
    called_nonmember: int | None

    def __add__(self, other: PointCounts) -> PointCounts:
        assert self.t == other.t and self.rows.keys() == other.rows.keys()
        a, b = self.called_nonmember, other.called_nonmember
        return PointCounts(
            self.t,
            {k: self.rows[k] + other.rows[k] for k in self.rows},
            {k: self.correct[k] + other.correct[k] for k in self.correct},
            a + b if a is not None and b is not None else None,
        )

    def metrics(self) -> PointMetrics:
        def share(count: int | None, split: str) -> float:
            rows = self.rows[split]
            return count / rows if count is not None and rows else float("nan")

        forget_acc = share(self.correct["forget"], "forget")
        values = {
            "forget_accuracy": forget_acc,
            "unlearning_accuracy": 1.0 - forget_acc,
            "retain_accuracy": share(self.correct["retain"], "retain"),
            "test_accuracy": share(self.correct["test"], "test"),
            "mia_efficacy": share(self.called_nonmember, "forget"),
        }
        forgotten = "forgotten_class_test"
        if self.rows.get(forgotten):
            values["forgotten_class_test_accuracy"] = share(self.correct[forgotten], forgotten)
        rows = {k: n for k, n in self.rows.items() if n or k != forgotten}
        std_errors = {name: std_error(value, rows[SPLIT_OF[name]]) for name, value in values.items()}
        return PointMetrics(t=self.t, **values, std_errors=std_errors, rows=rows)

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate(
    model: nn.Module, sets: EvalSets, adapter: InputAdapter, batch_size: int, t: float | None = None
) -> PointMetrics:
    """All metrics of one model (BatchNorm statistics already in place)."""
    return count(model, sets, adapter, batch_size, t).metrics()


def count(
    model: nn.Module, sets: EvalSets, adapter: InputAdapter, batch_size: int, t: float | None = None
) -> PointCounts:
    """The counts `evaluate` derives its metrics from; on a part of the rows (`EvalSets.share`) the part's."""
    retain_correct, retain_conf = predict(model, sets.retain, adapter, batch_size)
    forget_correct, forget_conf = predict(model, sets.forget, adapter, batch_size)
    test_correct, test_conf = predict(model, sets.test, adapter, batch_size)
    members, nonmembers = retain_conf[: len(test_conf)], test_conf
    if sets.attack is not None:
        members, nonmembers = (predict(model, rows, adapter, batch_size)[1] for rows in sets.attack)
    splits = {"forget": forget_correct, "retain": retain_correct, "test": test_correct}
    if sets.forgotten_class_test is not None:
        splits["forgotten_class_test"] = predict(model, sets.forgotten_class_test, adapter, batch_size)[0]
    return PointCounts(
        t,
        {split: len(correct) for split, correct in splits.items()},
        {split: int(correct.sum()) for split, correct in splits.items()},
        called_nonmember(members, nonmembers, forget_conf),
    )


GAP_METRICS = ("unlearning_accuracy", "retain_accuracy", "test_accuracy", "mia_efficacy")


def avg_gap(point: PointMetrics, reference: PointMetrics) -> float:
    """Mean absolute difference over UA, RA, TA and MIA-efficacy (fractions; ×100 for points)."""
    return float(np.mean([abs(getattr(point, m) - getattr(reference, m)) for m in GAP_METRICS]))
