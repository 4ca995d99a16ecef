"""Tensor datasets with stable sample indices, retain/forget/test splits and seeded batching.

A sample's index is its row in the dataset's train (or test) tensors; forget sets are given as such
indices (or as classes), so they can be persisted and replayed exactly. Inputs stay in their stored dtype
(uint8 images stay uint8 in memory) and are scaled, normalised and channel-adapted per batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from unlearning.rows import RowSource, gathered, loader_workers, take_rows
from unlearning.transforms import Augmentation


class ForgetSetError(ValueError):
    """The forget set is empty, covers the whole training set, or names unknown samples or classes."""


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and std applied to inputs scaled to [0, 1]: a model's declared preprocessing (the
    service), or fitted on the train split (`fit`, the library's default). One value applies to every channel."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def fit(cls, inputs: Tensor | RowSource, batch_rows: int = 4096) -> Normalization:
        """Mean and (unbiased) std per channel in one streamed pass: float64 sums over batches of rows, so a
        set larger than memory is fitted with memory of one batch."""
        channels = inputs.shape[1]
        total = torch.zeros(channels, dtype=torch.float64)
        squares = torch.zeros(channels, dtype=torch.float64)
        for chunk in torch.arange(len(inputs)).split(batch_rows):
            x = scale_inputs(inputs[chunk]).double().transpose(0, 1).reshape(channels, -1)
            total += x.sum(dim=1)
            squares += (x * x).sum(dim=1)
        count = len(inputs) * math.prod(inputs.shape[2:])
        mean = total / count
        std = ((squares - count * mean * mean) / max(1, count - 1)).clamp_min(0).sqrt().clamp_min(1e-6)
        return cls(tuple(mean.float().tolist()), tuple(std.float().tolist()))


def scale_inputs(inputs: Tensor) -> Tensor:
    """uint8 images to floats in [0, 1]; float inputs are taken as already scaled."""
    return inputs.float() / 255.0 if inputs.dtype == torch.uint8 else inputs.float()


@dataclass(frozen=True)
class InputAdapter:
    """Turns a stored batch (already through the model's input transform) into model input: scale to [0, 1],
    repeat grey to `channels`, then normalise (the order a user's pipeline follows: grey to RGB, then e.g.
    ImageNet statistics). `augmented` adds the model's augmentation before that, for training steps only."""

    normalization: Normalization
    channels: int
    augmentation: Augmentation | None = None

    def __call__(self, inputs: Tensor) -> Tensor:
        return self._normalise(scale_inputs(inputs))

    def augmented(self, inputs: Tensor, generator: torch.Generator) -> Tensor:
        x = scale_inputs(inputs)
        if self.augmentation is not None:
            x = self.augmentation(x, generator)
        return self._normalise(x)

    def _normalise(self, x: Tensor) -> Tensor:
        if x.shape[1] == 1 and self.channels != 1:
            x = x.expand(-1, self.channels, -1, -1)
        mean = torch.tensor(self.normalization.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.normalization.std, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std


@dataclass
class ImageDataset:
    """A labelled image dataset: train and test inputs [N, C, H, W] (tensors or row sources, unlearning/rows.py)
    with int64 labels."""

    train_inputs: Tensor | RowSource
    train_labels: Tensor
    test_inputs: Tensor | RowSource
    test_labels: Tensor
    num_classes: int
    normalization: Normalization | None = None

    def __post_init__(self) -> None:
        for name in ("train", "test"):
            inputs, labels = getattr(self, f"{name}_inputs"), getattr(self, f"{name}_labels")
            if len(inputs.shape) != 4:
                raise ValueError(f"{name} inputs must have shape [N, C, H, W], got {list(inputs.shape)}")
            if inputs.dtype not in (torch.uint8, torch.float32):
                raise ValueError(f"{name} inputs must be uint8 or float32, got {inputs.dtype}")
            if labels.dtype != torch.int64 or labels.shape != (inputs.shape[0],):
                raise ValueError(f"{name} labels must be int64 of shape [{inputs.shape[0]}]")
            if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise ValueError(f"{name} labels must lie in [0, {self.num_classes})")
        if self.train_inputs.shape[1:] != self.test_inputs.shape[1:]:
            raise ValueError("train and test inputs differ in shape")
        if self.normalization is None:
            self.normalization = Normalization.fit(self.train_inputs)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_inputs.shape[1:])


@dataclass
class Subset:
    """Rows of one split; `ids` are the rows' stable indices in that split. Labels and ids are in memory; inputs
    are a tensor (in memory) or a row source (streamed); either way batches are gathered where the rows are,
    then moved to `device`."""

    inputs: Tensor | RowSource
    labels: Tensor
    ids: Tensor
    device: torch.device | None = None  # where batches go; None: the labels' device

    @property
    def target(self) -> torch.device:
        return self.device if self.device is not None else self.labels.device

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, positions: Tensor) -> Subset:
        positions = positions.to(self.labels.device)
        return Subset(take_rows(self.inputs, positions), self.labels[positions], self.ids[positions], self.device)

    def sample(self, count: int, generator: torch.Generator) -> Subset:
        """A seeded random subset of at most `count` rows (all rows, in order, when fewer)."""
        if count >= len(self):
            return self
        return self.take(torch.randperm(len(self), generator=generator)[:count])

    def batches_on(self, device: torch.device | str) -> Subset:
        """The same rows, whose batches go to `device`: nothing moves now, in memory or streamed (a set may be
        larger than the device's memory; one batch at a time is what a step needs). Not named `to`: torch's
        `to` moves its object, this never does."""
        return Subset(self.inputs, self.labels, self.ids, torch.device(device))


@dataclass
class UnlearningData:
    """What an unlearning job sees: retain, forget and test rows plus the input adapter."""

    retain: Subset
    forget: Subset
    test: Subset
    num_classes: int
    adapter: InputAdapter
    forget_classes: tuple[int, ...] = field(default=())

    @property
    def scenario(self) -> str:
        return "classwise" if self.forget_classes else "random"

    def test_split_by_class(self) -> tuple[Subset, Subset]:
        """Class-wise forgetting: (test rows of retained classes, test rows of forgotten classes)."""
        forgotten = torch.isin(self.test.labels, torch.tensor(self.forget_classes, device=self.test.labels.device))
        return self.test.take(torch.nonzero(~forgotten).flatten()), self.test.take(torch.nonzero(forgotten).flatten())

    def batches_on(self, device: torch.device | str) -> UnlearningData:
        """Each set's batches go to `device` (Subset.batches_on): no row moves now."""
        return UnlearningData(
            self.retain.batches_on(device),
            self.forget.batches_on(device),
            self.test.batches_on(device),
            self.num_classes,
            self.adapter,
            self.forget_classes,
        )


def make_unlearning_data(
    dataset: ImageDataset,
    *,
    channels: int,
    forget_indices: Sequence[int] | Tensor | None = None,
    forget_classes: Sequence[int] | None = None,
    augmentation: Augmentation | None = None,
) -> UnlearningData:
    """Split the training set into retain and forget by sample indices or by classes (exactly one);
    `augmentation` applies to training batches only."""
    if (forget_indices is None) == (forget_classes is None):
        raise ForgetSetError("give exactly one of forget_indices or forget_classes")
    n_train = len(dataset.train_labels)
    classes: tuple[int, ...] = ()
    if forget_classes is not None:
        classes = tuple(sorted({int(c) for c in forget_classes}))
        if not classes:
            raise ForgetSetError("the forget set is empty: no classes given")
        unknown = [c for c in classes if not 0 <= c < dataset.num_classes]
        if unknown:
            raise ForgetSetError(f"unknown classes {unknown}: the dataset has classes 0..{dataset.num_classes - 1}")
        is_forget = torch.isin(dataset.train_labels, torch.tensor(classes))
        if not is_forget.any():
            raise ForgetSetError(f"the forget set is empty: no training sample has class {list(classes)}")
    else:
        indices = torch.as_tensor(forget_indices, dtype=torch.int64).flatten()
        if len(indices) == 0:
            raise ForgetSetError("the forget set is empty: no sample indices given")
        bad = indices[(indices < 0) | (indices >= n_train)]
        if len(bad):
            raise ForgetSetError(f"unknown sample indices {bad[:10].tolist()}: the training set has {n_train} samples")
        is_forget = torch.zeros(n_train, dtype=torch.bool)
        is_forget[indices] = True
    if is_forget.all():
        raise ForgetSetError("the forget set is the whole training set: nothing would be retained")
    train = Subset(dataset.train_inputs, dataset.train_labels, torch.arange(n_train))
    test = Subset(dataset.test_inputs, dataset.test_labels, torch.arange(len(dataset.test_labels)))
    assert dataset.normalization is not None
    return UnlearningData(
        retain=train.take(torch.nonzero(~is_forget).flatten()),
        forget=train.take(torch.nonzero(is_forget).flatten()),
        test=test,
        num_classes=dataset.num_classes,
        adapter=InputAdapter(dataset.normalization, channels, augmentation),
        forget_classes=classes,
    )


def batches(
    subset: Subset, batch_size: int, adapter: InputAdapter, generator: torch.Generator | None = None
) -> Iterator[tuple[Tensor, Tensor]]:
    """Model-ready (inputs, labels) batches; shuffled with `generator` when one is given."""
    n = len(subset)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    chunks = list(order.to(subset.labels.device).split(batch_size))
    for rows, inputs in zip(
        chunks, gathered(lambda r: subset.inputs[r], chunks, loader_workers(subset.inputs)), strict=True
    ):
        yield adapter(inputs.to(subset.target, non_blocking=True)), subset.labels[rows].to(subset.target)


def seeded_generator(*seeds: int) -> torch.Generator:
    """A CPU generator whose stream depends on every seed given (e.g. the job seed and the epoch)."""
    value = 0
    for s in seeds:
        value = (value * 1_000_003 + int(s)) % (2**63 - 1)
    return torch.Generator().manual_seed(value)


def load_digits_dataset(test_fraction: float = 0.2, seed: int = 0) -> ImageDataset:
    """sklearn's bundled 8×8 digits (1,797 images) as uint8 [N, 1, 8, 8], split with a fixed seed."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images).float()  # values 0..16
    inputs = (images * (255.0 / 16.0)).round().to(torch.uint8).unsqueeze(1)
    labels = torch.from_numpy(digits.target).long()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_test = round(len(labels) * test_fraction)
    test_rows, train_rows = order[:n_test], order[n_test:]
    return ImageDataset(inputs[train_rows], labels[train_rows], inputs[test_rows], labels[test_rows], 10)
