"""The streamed data path against the in-memory one: the same rows, batches and metrics, to the bit.

Digits written to two safetensors shard files in a scrambled layout (split row k lives at some (shard, row)
far from k), read back with positioned reads, directly and through DataLoader processes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.unlearning.conftest import FAST, FORGET_CLASS
from unlearning import ImageDataset, make_unlearning_data, run_unlearning
from unlearning.data import Normalization, Subset, UnlearningData, batches, seeded_generator
from unlearning.rows import RowView, ShardRows, materialize, take_rows
from unlearning.training import plain_batches, stratified_batches


def shard_rows(inputs: torch.Tensor, directory: Path, workers: int = 0) -> ShardRows:
    """`inputs` stored in two shards, row k of the result at a scrambled (shard, row)."""
    n = len(inputs)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(7))  # file slot -> split row
    half = n // 2
    paths = []
    for index, slots in enumerate((order[:half], order[half:])):
        paths.append(directory / f"{index}.safetensors")
        save_file({"inputs": inputs[slots].contiguous(), "labels": torch.zeros(len(slots), dtype=torch.int64)},
                  str(paths[-1]))
    slot_of = torch.empty(n, dtype=torch.int64)
    slot_of[order] = torch.arange(n)
    shard = (slot_of >= half).long()
    return ShardRows(lambda i: paths[i], shard, slot_of - shard * half, inputs.shape[1:], inputs.dtype, workers)


def streamed(digits: ImageDataset, directory: Path, workers: int = 0) -> ImageDataset:
    (directory / "train").mkdir()
    (directory / "test").mkdir()
    return ImageDataset(shard_rows(digits.train_inputs, directory / "train", workers), digits.train_labels,
                        shard_rows(digits.test_inputs, directory / "test", workers), digits.test_labels,
                        digits.num_classes, digits.normalization)


def test_shard_rows_gather_exactly_the_rows_asked_for_in_their_order(digits: ImageDataset, tmp_path: Path) -> None:
    source = shard_rows(digits.train_inputs, tmp_path)
    rows = torch.tensor([5, 0, len(source) - 1, 5, 700])
    assert torch.equal(source[rows], digits.train_inputs[rows])
    view = take_rows(take_rows(source, torch.arange(100, 400)), torch.tensor([3, 0, 299]))
    assert isinstance(view, RowView) and view.base is source  # views compose, never nest or copy
    assert torch.equal(view[torch.tensor([2, 0, 1])], digits.train_inputs[[399, 103, 100]])
    assert torch.equal(materialize(source), digits.train_inputs)
    assert Normalization.fit(source) == Normalization.fit(digits.train_inputs)
    fitted = digits.train_inputs.double() / 255
    assert Normalization.fit(source).mean[0] == pytest.approx(float(fitted.mean()), rel=1e-6)
    assert Normalization.fit(source).std[0] == pytest.approx(float(fitted.std()), rel=1e-6)


def same_batches(a, b) -> None:  # BatchPlans or iterators of (inputs, labels)
    pairs = list(zip(a, b, strict=True))
    assert pairs
    for x, y in pairs:
        for u, v in zip(vars(x).values() if hasattr(x, "is_forget") else x,
                        vars(y).values() if hasattr(y, "is_forget") else y, strict=True):
            assert torch.equal(u, v)


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_are_the_in_memory_batches(digits: ImageDataset, tmp_path: Path, workers: int) -> None:
    """After an "erasure" (a sparse view of the train rows), random and class-wise: every batch kind."""
    kept = torch.nonzero(torch.arange(len(digits.train_labels)) % 9 != 4).flatten()
    source = streamed(digits, tmp_path, workers)
    for dataset in (digits, source):
        dataset.train_inputs = take_rows(dataset.train_inputs, kept)
        dataset.train_labels = dataset.train_labels[kept]
    for forget in ({"forget_indices": torch.arange(3, 600, 7)}, {"forget_classes": [FORGET_CLASS]}):
        a = make_unlearning_data(source, channels=1, **forget)
        b = make_unlearning_data(digits, channels=1, **forget)
        for name in ("retain", "forget", "test"):
            assert torch.equal(materialize(getattr(a, name).inputs), getattr(b, name).inputs)
            assert torch.equal(getattr(a, name).ids, getattr(b, name).ids)
        same_batches(stratified_batches(a.retain, a.forget, 128, a.adapter, seeded_generator(3)),
                     stratified_batches(b.retain, b.forget, 128, b.adapter, seeded_generator(3)))
        same_batches(plain_batches(a.forget, 32, a.adapter, seeded_generator(3), from_forget=True),
                     plain_batches(b.forget, 32, b.adapter, seeded_generator(3), from_forget=True))
        same_batches(batches(a.test, 100, a.adapter, seeded_generator(3)),
                     batches(b.test, 100, b.adapter, seeded_generator(3)))


@pytest.mark.parametrize("workers", [0, 2])
def test_a_partial_last_batch_of_forget_rows_is_kept(digits: ImageDataset, tmp_path: Path, workers: int) -> None:
    data = make_unlearning_data(streamed(digits, tmp_path, workers), channels=1, forget_indices=torch.arange(70))
    plan = plain_batches(data.forget, 32, data.adapter, torch.Generator().manual_seed(0), from_forget=True)
    seen = [b for b in plan]
    assert [len(b.labels) for b in seen] == [32, 32, 6] and all(b.is_forget.all() for b in seen)
    expected = data.adapter(digits.train_inputs[:70])
    got = torch.cat([b.inputs for b in seen])
    assert sorted(map(bytes, got.flatten(1).numpy())) == sorted(map(bytes, expected.flatten(1).numpy()))
    assert sum(len(y) for _, y in batches(data.forget, 32, data.adapter)) == 70


def test_a_job_on_streamed_rows_measures_what_the_in_memory_job_measures(digits: ImageDataset, tmp_path: Path,
                                                                        original: torch.nn.Module) -> None:
    """The whole pipeline (mask, base, curve, BatchNorm, grid, materialisation) on CPU: equal to the bit."""
    forget = torch.randperm(len(digits.train_labels), generator=torch.Generator().manual_seed(1))[:143]
    results = []
    for data in (make_unlearning_data(streamed(digits, tmp_path), channels=1, forget_indices=forget),
                 make_unlearning_data(digits, channels=1, forget_indices=forget)):
        result = run_unlearning(original, data, "rl", FAST, device="cpu")
        results.append(([p.to_dict() for p in result.points], result.materialize(0.5)[1].to_dict()))
    assert results[0] == results[1]


def test_a_streamed_subset_stays_on_the_host_and_sends_batches_to_the_device(digits: ImageDataset,
                                                                             tmp_path: Path) -> None:
    data = make_unlearning_data(streamed(digits, tmp_path), channels=1, forget_classes=[FORGET_CLASS]).to("meta")
    assert isinstance(data, UnlearningData) and isinstance(data.retain, Subset)
    assert data.retain.labels.device.type == "cpu" and data.retain.target.type == "meta"
    x, y = next(batches(data.test, 8, lambda inputs: inputs))  # the adapter would compute on "meta"
    assert x.device.type == "meta" and y.device.type == "meta"
