"""The streamed data path against the in-memory one: the same rows, batches and metrics, to the bit.

Digits written to two safetensors shard files in a scrambled layout (split row k lives at some (shard, row)
far from k), read back with positioned reads, directly and through DataLoader processes. Encoded shards
(PNG / JPEG of mixed sizes) and tensor shards through the model's input transform against what a user's
Pillow + torchvision pipeline gives.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.numpy import save_file as save_numpy_file
from safetensors.torch import save_file
from torch import Tensor

from tests.unlearning.conftest import FAST, FORGET_CLASS
from unlearning import ImageDataset, make_unlearning_data, run_unlearning
from unlearning.data import Normalization, Subset, UnlearningData, batches, seeded_generator
from unlearning.rows import EncodedRows, RowView, ShardRows, Transformed, gathered, materialize, read_offsets, take_rows
from unlearning.training import plain_batches, stratified_batches
from unlearning.transforms import InputTransform, model_input_shape


def shard_rows(inputs: torch.Tensor, directory: Path, workers: int = 0) -> ShardRows:
    """`inputs` stored in two shards, row k of the result at a scrambled (shard, row)."""
    n = len(inputs)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(7))  # file slot -> split row
    half = n // 2
    paths = []
    for index, slots in enumerate((order[:half], order[half:])):
        paths.append(directory / f"{index}.safetensors")
        save_file(
            {"inputs": inputs[slots].contiguous(), "labels": torch.zeros(len(slots), dtype=torch.int64)}, str(paths[-1])
        )
    slot_of = torch.empty(n, dtype=torch.int64)
    slot_of[order] = torch.arange(n)
    shard = (slot_of >= half).long()
    return ShardRows(lambda i: paths[i], shard, slot_of - shard * half, inputs.shape[1:], inputs.dtype, workers)


def streamed(digits: ImageDataset, directory: Path, workers: int = 0) -> ImageDataset:
    (directory / "train").mkdir()
    (directory / "test").mkdir()
    return ImageDataset(
        shard_rows(digits.train_inputs, directory / "train", workers),
        digits.train_labels,
        shard_rows(digits.test_inputs, directory / "test", workers),
        digits.test_labels,
        digits.num_classes,
        digits.normalization,
    )


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
        for u, v in zip(
            vars(x).values() if hasattr(x, "is_forget") else x,
            vars(y).values() if hasattr(y, "is_forget") else y,
            strict=True,
        ):
            assert torch.equal(u, v) if isinstance(u, torch.Tensor) else u == v


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_are_the_in_memory_batches(digits: ImageDataset, tmp_path: Path, workers: int) -> None:
    """After an "erasure" (a sparse view of the train rows), random and class-wise: every batch kind."""
    kept = torch.nonzero(torch.arange(len(digits.train_labels)) % 9 != 4).flatten()
    source = streamed(digits, tmp_path, workers)
    digits = copy.copy(digits)  # the session's fixture stays whole for the tests after this one
    for dataset in (digits, source):
        dataset.train_inputs = take_rows(dataset.train_inputs, kept)
        dataset.train_labels = dataset.train_labels[kept]
    for forget in ({"forget_indices": torch.arange(3, 600, 7)}, {"forget_classes": [FORGET_CLASS]}):
        a = make_unlearning_data(source, channels=1, **forget)
        b = make_unlearning_data(digits, channels=1, **forget)
        for name in ("retain", "forget", "test"):
            assert torch.equal(materialize(getattr(a, name).inputs), getattr(b, name).inputs)
            assert torch.equal(getattr(a, name).ids, getattr(b, name).ids)
        same_batches(
            stratified_batches(a.retain, a.forget, 128, a.adapter, seeded_generator(3)),
            stratified_batches(b.retain, b.forget, 128, b.adapter, seeded_generator(3)),
        )
        same_batches(
            plain_batches(a.forget, 32, a.adapter, seeded_generator(3), from_forget=True),
            plain_batches(b.forget, 32, b.adapter, seeded_generator(3), from_forget=True),
        )
        same_batches(
            batches(a.test, 100, a.adapter, seeded_generator(3)), batches(b.test, 100, b.adapter, seeded_generator(3))
        )


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


def test_a_job_on_streamed_rows_measures_what_the_in_memory_job_measures(
    digits: ImageDataset, tmp_path: Path, original: torch.nn.Module
) -> None:
    """The whole pipeline (mask, base, curve, BatchNorm, grid, materialisation) on CPU: equal to the bit."""
    forget = torch.randperm(len(digits.train_labels), generator=torch.Generator().manual_seed(1))[:143]
    results = []
    for data in (
        make_unlearning_data(streamed(digits, tmp_path), channels=1, forget_indices=forget),
        make_unlearning_data(digits, channels=1, forget_indices=forget),
    ):
        result = run_unlearning(original, data, "rl", FAST, device="cpu")
        results.append(([p.to_dict() for p in result.points], result.materialize(0.5)[1].to_dict()))
    assert results[0] == results[1]


def test_a_streamed_subset_stays_on_the_host_and_sends_batches_to_the_device(
    digits: ImageDataset, tmp_path: Path
) -> None:
    data = make_unlearning_data(streamed(digits, tmp_path), channels=1, forget_classes=[FORGET_CLASS]).batches_on(
        "meta"
    )
    assert isinstance(data, UnlearningData) and isinstance(data.retain, Subset)
    assert data.retain.labels.device.type == "cpu" and data.retain.target.type == "meta"
    x, y = next(batches(data.test, 8, lambda inputs: inputs))  # the adapter would compute on "meta"
    assert x.device.type == "meta" and y.device.type == "meta"


# --- encoded images and the model's input transform ------------------------------------------------------------


def encoded_files(directory: Path, images: list[bytes], shards: int = 2) -> tuple[list[Path], Tensor, Tensor]:
    """`images` in encoded shards (row k of the result at a scrambled (shard, row)): (paths, shard, row)."""
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(5))  # file slot -> row
    paths, shard, row = [], torch.empty(len(images), dtype=torch.int64), torch.empty(len(images), dtype=torch.int64)
    for index, slots in enumerate(order.tensor_split(shards)):
        data = [images[k] for k in slots.tolist()]
        paths.append(directory / f"{index}.safetensors")
        save_numpy_file(
            {
                "images": np.frombuffer(b"".join(data), dtype=np.uint8),
                "offsets": np.array([0, *np.cumsum([len(d) for d in data])], dtype=np.int64),
                "labels": np.zeros(len(data), dtype=np.int64),
            },
            str(paths[-1]),
        )
        shard[slots], row[slots] = index, torch.arange(len(slots))
    return paths, shard, row


def encoded_rows(directory: Path, images: list[bytes], channels: int, transform: dict, workers: int = 0) -> EncodedRows:
    paths, shard, row = encoded_files(directory, images)
    declared = InputTransform.from_dict(transform)
    assert declared is not None
    return EncodedRows(
        lambda i: paths[i],
        shard,
        row,
        {i: read_offsets(p) for i, p in enumerate(paths)},
        channels,
        declared,
        model_input_shape([channels, None, None], declared)[1:],
        workers,
    )


def photos(count: int = 13) -> list[bytes]:
    """Colour PNGs and JPEGs (and one grey PNG) of mixed sizes and aspect ratios."""
    rng = np.random.default_rng(3)
    out = []
    for k in range(count):
        pixels = rng.integers(0, 256, (9 + 3 * k % 17, 7 + 5 * k % 23, 3), dtype=np.uint8)
        image = Image.fromarray(pixels).convert("L" if k == 4 else "RGB")
        buffer = io.BytesIO()
        image.save(buffer, "JPEG" if k % 3 == 0 else "PNG", **({"quality": 85} if k % 3 == 0 else {}))
        out.append(buffer.getvalue())
    return out


@pytest.mark.parametrize("workers", [0, 1])
def test_encoded_rows_are_what_a_users_pillow_and_torchvision_pipeline_gives(tmp_path: Path, workers: int) -> None:
    """Decoded with Pillow, then PILToTensor, Resize and CenterCrop (torchvision's classes): equal to the bit,
    gathered in this process or in a DataLoader process, in any order, through views."""
    from torchvision.transforms import v2

    images = photos()
    for channels, mode in ((3, "RGB"), (1, "L")):
        pipeline = v2.Compose([v2.PILToTensor(), v2.Resize(10), v2.CenterCrop([8, 6])])
        expected = torch.stack([pipeline(Image.open(io.BytesIO(b)).convert(mode)) for b in images])
        (tmp_path / mode).mkdir()
        source = encoded_rows(tmp_path / mode, images, channels, {"resize": 10, "center_crop": [8, 6]}, workers)
        assert (source.shape, source.dtype, len(source)) == (torch.Size([13, channels, 8, 6]), torch.uint8, 13)
        keys = [torch.tensor([12, 0, 5, 5]), torch.tensor([], dtype=torch.int64), torch.arange(13)]
        for rows, got in zip(keys, gathered(source.__getitem__, keys, workers), strict=True):
            assert torch.equal(got, expected[rows])
        view = take_rows(take_rows(source, torch.arange(3, 13)), torch.tensor([9, 0]))
        assert view.shape == (2, channels, 8, 6) and torch.equal(view[torch.tensor([1, 0])], expected[[3, 12]])
        assert torch.equal(materialize(source), expected)
        assert Normalization.fit(source) == Normalization.fit(expected)


def test_a_transform_that_leaves_sizes_apart_or_a_corrupt_image_names_the_problem(tmp_path: Path) -> None:
    images = photos(4)
    source = encoded_rows(tmp_path, images, 3, {"resize": 10})  # no crop: only square images get 10x10
    with pytest.raises(ValueError, match="declare a center_crop"):
        source[torch.arange(4)]
    (tmp_path / "cut").mkdir()
    cut = encoded_rows(tmp_path / "cut", [images[0][:-40], *images[1:]], 3, {"resize": [4, 4]})
    with pytest.raises(ValueError, match=r"the image at shard \d, byte \d+ cannot be decoded"):
        cut[torch.arange(4)]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_transformed_tensor_dataset_is_every_stored_image_through_the_transform(
    digits: ImageDataset, tmp_path: Path, workers: int
) -> None:
    """Pixels stored at one size (8x8 digits), resized to what the model takes; batched or one image at a time
    is the same, and every consumer sees the transformed shape."""
    from torchvision.transforms import v2

    transform = InputTransform.from_dict({"resize": [12, 10]})
    assert transform is not None
    source = Transformed(shard_rows(digits.train_inputs, tmp_path, workers), transform)
    expected = torch.stack([v2.Resize([12, 10])(image) for image in digits.train_inputs[:50]])
    assert (source.shape, source.dtype, source.workers) == (
        torch.Size([len(digits.train_labels), 1, 12, 10]),
        torch.uint8,
        workers,
    )
    assert torch.equal(source[torch.arange(50)], expected) and source[torch.tensor([], dtype=torch.int64)].shape == (
        0,
        1,
        12,
        10,
    )
    data = make_unlearning_data(
        ImageDataset(source, digits.train_labels, Transformed(digits.test_inputs, transform), digits.test_labels, 10),
        channels=1,
        forget_indices=torch.arange(7),
    )
    assert torch.equal(materialize(data.forget.inputs), expected[:7])
    x, _ = next(batches(data.retain, 16, lambda inputs: inputs))
    assert x.shape == (16, 1, 12, 10)
