"""An image folder of PNG / JPEG files of mixed sizes, prepared by the client (kept encoded), registered through
`POST /v1/datasets` and loaded by the worker with a model's input transform: every row, in position order, is
what the user's Pillow + torchvision pipeline gives for that file; in memory and streamed through a loader
process alike. Erasure rewrites an encoded shard without the erased rows' bytes.
"""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from api.app import create_app
from api.ingest import inspect_shard
from mcu_client.dataset_files import prepare_dataset
from models import Dataset, Sample
from settings import Settings
from unlearning.data import Normalization, batches, make_unlearning_data
from unlearning.rows import EncodedRows, materialize, read_offsets, safetensors_layout
from unlearning.transforms import InputTransform
from worker.inputs import load_dataset
from worker.services import Services, connect
from worker.shards import without_rows

TRANSFORM = {"resize": 9, "center_crop": [8, 7]}
UNIT = {"mean": [0.0], "std": [1.0]}


def image_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split, count in (("train", 9), ("test", 4)):
        for label in ("ant", "bee"):
            (root / split / label).mkdir(parents=True)
            for k in range(count):
                pixels = rng.integers(0, 256, (8 + 3 * k, 11 + 2 * k % 5, 3), dtype=np.uint8)
                image = Image.fromarray(pixels).convert("L" if k % 4 == 1 else "RGB")
                image.save(root / split / label / f"{k}.{'jpg' if k % 3 == 0 else 'png'}")


def expected_rows(root: Path, sample_ids: list[str]) -> torch.Tensor:
    from torchvision.transforms import v2

    pipeline = v2.Compose([v2.PILToTensor(), v2.Resize(9), v2.CenterCrop([8, 7])])
    return torch.stack([pipeline(Image.open(root / s).convert("RGB")) for s in sample_ids])


def split_ids(services: Services, dataset_id: str, split: str) -> list[str]:
    with services.factory() as session:
        return list(
            session.scalars(
                select(Sample.sample_id)
                .where(Sample.dataset_id == dataset_id, Sample.split == split)
                .order_by(Sample.position)
            )
        )


@pytest.fixture(scope="module")
def uploaded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, str, Path]:
    root = tmp_path_factory.mktemp("folder")
    image_folder(root / "images")
    prepared = prepare_dataset(root / "images", root / "prepared", max_shard_bytes=4000)
    assert len(prepared.shards) > 2
    settings = Settings(data_dir=root / "service", bootstrap_api_key="k", in_memory_bytes=0)
    client = TestClient(create_app(settings), headers={"Authorization": "Bearer k"})
    response = client.post(
        "/v1/datasets",
        data={"name": "bugs"},
        files=[
            ("manifest", ("manifest.csv", prepared.manifest.read_bytes())),
            *(("shards", (p.name, p.read_bytes())) for p in prepared.shards),
        ],
    )
    assert response.status_code == 201, response.text
    assert (response.json()["input_encoding"], response.json()["input_shape"]) == ("encoded", [3, None, None])
    return settings, response.json()["id"], root / "images"


@pytest.mark.parametrize(("in_memory_bytes", "workers"), [(1 << 30, 0), (0, 0), (0, 1)])
def test_an_uploaded_encoded_dataset_loads_as_the_users_pipeline_sees_it(
    uploaded: tuple[Settings, str, Path], in_memory_bytes: int, workers: int
) -> None:
    settings, dataset_id, root = uploaded
    services = connect(settings.model_copy(update={"in_memory_bytes": in_memory_bytes, "loader_workers": workers}))
    with services.factory() as session:
        dataset, positions = load_dataset(services, session, session.get(Dataset, dataset_id), UNIT, TRANSFORM)
    assert isinstance(dataset.train_inputs, torch.Tensor) == (in_memory_bytes > 0)
    assert dataset.input_shape == (3, 8, 7) and torch.equal(positions, torch.arange(18))
    train, test = (expected_rows(root, split_ids(services, dataset_id, s)) for s in ("train", "test"))
    assert torch.equal(materialize(dataset.train_inputs), train) and torch.equal(materialize(dataset.test_inputs), test)
    assert dataset.train_labels.tolist() == [0] * 9 + [1] * 9
    if workers:  # the rows a job gathers come from the loader process
        data = make_unlearning_data(dataset, channels=3, forget_indices=torch.tensor([2, 11]))
        ((x, _),) = batches(data.forget, 8, lambda inputs: inputs)
        assert torch.equal(x.sort(dim=0).values, train[[2, 11]].sort(dim=0).values)


def test_the_dataset_preset_is_fitted_on_transformed_rows_and_a_size_is_required(
    uploaded: tuple[Settings, str, Path],
) -> None:
    settings, dataset_id, root = uploaded
    services = connect(settings)
    with services.factory() as session:
        row = session.get(Dataset, dataset_id)
        fitted, _ = load_dataset(services, session, row, {"mean": None}, TRANSFORM)
        with pytest.raises(ValueError, match="declare an input_transform"):
            load_dataset(services, session, row, UNIT, None)
    assert fitted.normalization == Normalization.fit(expected_rows(root, split_ids(services, dataset_id, "train")))


def test_an_encoded_shard_rewritten_without_rows_keeps_every_other_row_and_none_of_theirs(
    uploaded: tuple[Settings, str, Path], tmp_path: Path
) -> None:
    settings, dataset_id, _ = uploaded
    services = connect(settings)
    with services.factory() as session:
        shard = session.get(Dataset, dataset_id).shards[0]
    path = services.cache.path(shard["key"], shard["sha256"])
    offsets, images_at, data = read_offsets(path).tolist(), safetensors_layout(path, "images")[0], path.read_bytes()
    rows = [data[images_at + a : images_at + b] for a, b in itertools.pairwise(offsets)]
    kept = torch.ones(len(rows), dtype=torch.bool)
    kept[[0, 2]] = False
    with without_rows(path, kept) as rewritten:
        (tmp_path / "new.safetensors").write_bytes(rewritten.read())
    new = tmp_path / "new.safetensors"
    info = inspect_shard("new", io.BytesIO(new.read_bytes()))  # a shard the API accepts
    old_labels = inspect_shard("old", io.BytesIO(data)).labels.tolist()
    assert (info.encoding, info.rows) == ("encoded", len(rows) - 2)
    assert info.labels.tolist() == old_labels[1:2] + old_labels[3:]
    assert not any(rows[k] in new.read_bytes() for k in (0, 2))
    assert torch.equal(read_offsets(new).diff(), torch.tensor([len(r) for r in rows])[kept])
    transform = InputTransform.from_dict(TRANSFORM)
    assert transform is not None
    after, before = (
        EncodedRows(lambda i, p=p: p, torch.zeros(n), torch.arange(n), {0: read_offsets(p)}, 3, transform, (8, 7))
        for p, n in ((new, len(rows) - 2), (path, len(rows)))
    )
    assert torch.equal(materialize(after), materialize(before)[kept])


def test_a_tensor_dataset_is_loaded_through_the_transform_and_sized_after_it(
    uploaded: tuple[Settings, str, Path], tmp_path: Path
) -> None:
    """The same folder decoded at 5x5 into pixel shards: every row through Resize([8, 7]). The in-memory fast
    path is decided on the transformed rows (26 x 3 x 8 x 7 bytes), not the stored ones (26 x 3 x 5 x 5)."""
    from torchvision.transforms import v2

    settings, _, root = uploaded
    prepared = prepare_dataset(root, tmp_path / "pixels", size=(5, 5))
    client = TestClient(create_app(settings), headers={"Authorization": "Bearer k"})
    response = client.post(
        "/v1/datasets",
        data={"name": "pixels"},
        files=[
            ("manifest", ("manifest.csv", prepared.manifest.read_bytes())),
            *(("shards", (p.name, p.read_bytes())) for p in prepared.shards),
        ],
    )
    assert response.status_code == 201 and response.json()["input_shape"] == [3, 5, 5], response.text
    for budget, in_memory in ((26 * 3 * 5 * 5 + 100, False), (26 * 3 * 8 * 7, True)):
        services = connect(settings.model_copy(update={"in_memory_bytes": budget}))
        with services.factory() as session:
            row = session.get(Dataset, response.json()["id"])
            stored, _ = load_dataset(services, session, row, UNIT)
            dataset, _ = load_dataset(services, session, row, UNIT, {"resize": [8, 7]})
            fitted, _ = load_dataset(services, session, row, {"mean": None}, {"resize": [8, 7]})
        assert isinstance(dataset.train_inputs, torch.Tensor) == in_memory and dataset.input_shape == (3, 8, 7)
        for split in ("train", "test"):
            expected = v2.Resize([8, 7])(materialize(getattr(stored, f"{split}_inputs")))
            assert torch.equal(materialize(getattr(dataset, f"{split}_inputs")), expected)
        assert fitted.normalization == Normalization.fit(v2.Resize([8, 7])(materialize(stored.train_inputs)))
