"""A job's inputs: the dataset's rows (erased ones left out) as the model sees them (through its input
transform) and the model's weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.coalesce import job_positions
from domain.forget import erased_positions
from models import Dataset, DeletionRequest, Model, ModelVersion, Sample
from models.bulk import read_tuples
from storage import ObjectNotFound
from unlearning.architectures import build_model, model_input_channels
from unlearning.data import ImageDataset, Normalization, UnlearningData, make_unlearning_data
from unlearning.rows import (
    EncodedRows,
    RowSource,
    ShardRows,
    Transformed,
    materialize,
    read_offsets,
    source_bytes,
    take_rows,
)
from unlearning.transforms import Augmentation, InputTransform, model_input_shape
from worker.services import Services

ROWS_PER_QUERY = 50_000


def normalization_of(preprocessing: dict[str, Any], train_inputs: torch.Tensor | RowSource) -> Normalization:
    """The model's declared preprocessing; a "dataset" preset not yet resolved is fitted on the train split
    (in one streamed pass when the split is streamed)."""
    if preprocessing["mean"] is None:
        return Normalization.fit(train_inputs)
    return Normalization(tuple(preprocessing["mean"]), tuple(preprocessing["std"]))


def split_rows(session: Session, dataset: Dataset, split: str) -> torch.Tensor:
    """[N, 4] int64 (position, shard, row, label) of a split in position order, read in chunks: no ORM row
    per sample is ever held (they cost ~200 bytes each, the dataset's inputs at 28×28 cost 784)."""
    query = (
        select(Sample.position, Sample.shard, Sample.row, Sample.label)
        .where(Sample.dataset_id == dataset.id, Sample.split == split)
        .order_by(Sample.position)
    )
    parts = [
        torch.tensor(chunk, dtype=torch.int64).view(-1, 4) for chunk in read_tuples(session, query, ROWS_PER_QUERY)
    ]
    return torch.cat(parts) if parts else torch.empty((0, 4), dtype=torch.int64)


def load_dataset(
    services: Services,
    session: Session,
    dataset: Dataset,
    preprocessing: dict[str, Any],
    input_transform: dict[str, Any] | None = None,
) -> tuple[ImageDataset, torch.Tensor]:
    """The dataset's train and test splits in position order, as the model sees them: through its input
    transform (`input_transform`, the model's stored dict; None: none) and declared preprocessing, the only
    input transformations; and the train rows' positions (sparse once rows were erased from the shards: row k
    of the train split is not position k). Labels and positions are in memory; inputs are read from the cached
    shards as rows are gathered (`MCU_CACHE_BYTES` bounds the cache, shards are fetched on first read), or all
    at once when the transformed rows take at most `MCU_IN_MEMORY_BYTES` (the fast path for small sets).
    Encoded images (any size) need a transform that gives them one: ValueError otherwise."""
    shards = dataset.shards
    transform = InputTransform.from_dict(input_transform)
    channels, height, width = model_input_shape(dataset.input_shape, transform)

    def open_shard(index: int) -> Path:
        return services.cache.path(shards[index]["key"], shards[index]["sha256"])

    meta = {split: split_rows(session, dataset, split) for split in ("train", "test")}
    workers = services.settings.loader_workers
    sources: dict[str, RowSource]
    if dataset.input_encoding == "encoded":
        assert transform is not None  # model_input_shape refuses encoded images without one
        used = torch.cat([rows[:, 1] for rows in meta.values()]).unique().tolist()
        offsets = {index: read_offsets(open_shard(index)) for index in used}  # every row's bytes, once
        sources = {
            split: EncodedRows(
                open_shard, rows[:, 1], rows[:, 2], offsets, channels, transform, (height, width), workers
            )
            for split, rows in meta.items()
        }
    else:
        dtype = {"uint8": torch.uint8, "float32": torch.float32}[dataset.input_dtype]
        stored = {
            split: ShardRows(open_shard, rows[:, 1], rows[:, 2], dataset.input_shape, dtype, workers)
            for split, rows in meta.items()
        }
        sources = {split: Transformed(source, transform) if transform else source for split, source in stored.items()}
    inputs: dict[str, torch.Tensor | RowSource] = dict(sources)
    if sum(source_bytes(s) for s in sources.values()) <= services.settings.in_memory_bytes:
        inputs = {split: materialize(source) for split, source in sources.items()}
    train, test = meta["train"], meta["test"]
    return ImageDataset(
        inputs["train"],
        train[:, 3].clone(),
        inputs["test"],
        test[:, 3].clone(),
        dataset.num_classes,
        normalization_of(preprocessing, inputs["train"]),
    ), train[:, 0].clone()


def load_model(
    services: Services, session: Session, model: Model, version: int, input_shape: tuple[int, ...]
) -> torch.nn.Module:
    row = session.scalar(select(ModelVersion).where(ModelVersion.model_id == model.id, ModelVersion.version == version))
    if row is None or row.weights_deleted_at is not None:
        raise ObjectNotFound(f"model {model.id} version {version}")
    network = build_model(model.architecture, model.num_classes, input_shape, model.architecture_kwargs)
    network.load_state_dict(load_file(services.cache.path(row.storage_key, row.sha256)))
    return network.eval()


@dataclass
class JobInputs:
    model: torch.nn.Module
    data: UnlearningData
    forget_rows: int  # the job's forget set (with coalescing, the union of its requests'), as measured


def load_inputs(services: Services, request: DeletionRequest) -> JobInputs:
    """θ_o (the request's base version) and retain/forget/test data; rows erased by earlier requests leave the
    training set entirely, and the forget positions become row numbers of what is left."""
    with services.factory() as session:
        model = session.get(Model, request.model_id)
        assert model is not None
        dataset_row = session.get(Dataset, model.dataset_id)
        assert dataset_row is not None
        dataset, positions = load_dataset(services, session, dataset_row, model.preprocessing, model.input_transform)
        erased = torch.tensor(erased_positions(session, model.id), dtype=torch.int64)
        forget_positions = job_positions(session, request)  # with coalescing, the union of the job's requests
        network = load_model(services, session, model, request.model_version, dataset.input_shape)
    channels = model_input_channels(model.architecture, dataset.input_shape[0], model.architecture_kwargs)
    augmentation = Augmentation.from_list(model.augmentation)  # training steps only
    keep = ~torch.isin(positions, erased)
    trimmed = ImageDataset(
        take_rows(dataset.train_inputs, torch.nonzero(keep).flatten()),
        dataset.train_labels[keep],
        dataset.test_inputs,
        dataset.test_labels,
        dataset.num_classes,
        dataset.normalization,
    )
    if "classes" in request.forget:
        data = make_unlearning_data(
            trimmed, channels=channels, forget_classes=request.forget["classes"], augmentation=augmentation
        )
    else:  # positions -> rows of the trimmed train split (both sorted by position)
        kept = positions[keep]
        forget = torch.tensor(forget_positions, dtype=torch.int64)
        rows = torch.nonzero(torch.isin(kept, forget)).flatten()
        data = make_unlearning_data(trimmed, channels=channels, forget_indices=rows, augmentation=augmentation)
    return JobInputs(network, data, len(forget_positions))
