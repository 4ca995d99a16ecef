"""A job's inputs: the dataset's tensors (rows erased by earlier requests left out) and the model's weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import load_file
from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.coalesce import job_positions
from domain.forget import erased_positions
from models import Dataset, DeletionRequest, Model, ModelVersion, Sample
from storage import ObjectNotFound
from unlearning.architectures import build_model, model_input_channels
from unlearning.data import ImageDataset, Normalization, UnlearningData, make_unlearning_data
from worker.services import Services


def normalization_of(preprocessing: dict[str, Any], train_inputs: torch.Tensor) -> Normalization:
    """The model's declared preprocessing; a "dataset" preset not yet resolved is fitted on the train split."""
    if preprocessing["mean"] is None:
        return Normalization.fit(train_inputs)
    return Normalization(tuple(preprocessing["mean"]), tuple(preprocessing["std"]))


def load_dataset(services: Services, session: Session, dataset: Dataset, preprocessing: dict[str, Any]
                 ) -> tuple[ImageDataset, torch.Tensor]:
    """The dataset's train and test splits in position order, assembled from its cached shards, with the
    model's declared preprocessing as the only input transformation; and the train rows' positions (sparse
    once rows were erased from the shards: row k of the train split is not position k)."""
    shards = [load_file(services.cache.path(s["key"], s["sha256"])) for s in dataset.shards]
    splits = {}
    train_positions = torch.empty(0, dtype=torch.int64)
    for split in ("train", "test"):
        rows = session.execute(select(Sample.shard, Sample.row, Sample.position)
                               .where(Sample.dataset_id == dataset.id, Sample.split == split)
                               .order_by(Sample.position)).all()
        if split == "train":
            train_positions = torch.tensor([r.position for r in rows], dtype=torch.int64)
        shard_index = torch.tensor([r.shard for r in rows], dtype=torch.int64)
        row_index = torch.tensor([r.row for r in rows], dtype=torch.int64)
        first = shards[0]["inputs"]
        inputs = torch.empty((len(rows), *first.shape[1:]), dtype=first.dtype)
        labels = torch.empty(len(rows), dtype=torch.int64)
        for k, shard in enumerate(shards):
            chosen = shard_index == k
            inputs[chosen] = shard["inputs"][row_index[chosen]]
            labels[chosen] = shard["labels"][row_index[chosen]]
        splits[split] = (inputs, labels)
    (train_x, train_y), (test_x, test_y) = splits["train"], splits["test"]
    return ImageDataset(train_x, train_y, test_x, test_y, dataset.num_classes,
                        normalization_of(preprocessing, train_x)), train_positions


def load_model(services: Services, session: Session, model: Model, version: int, input_shape: tuple[int, ...]
               ) -> torch.nn.Module:
    row = session.scalar(select(ModelVersion).where(ModelVersion.model_id == model.id,
                                                    ModelVersion.version == version))
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
        dataset, positions = load_dataset(services, session, dataset_row, model.preprocessing)
        erased = torch.tensor(erased_positions(session, model.id), dtype=torch.int64)
        forget_positions = job_positions(session, request)  # with coalescing, the union of the job's requests
        network = load_model(services, session, model, request.model_version, dataset.input_shape)
    channels = model_input_channels(model.architecture, dataset.input_shape[0], model.architecture_kwargs)
    keep = ~torch.isin(positions, erased)
    trimmed = ImageDataset(dataset.train_inputs[keep], dataset.train_labels[keep], dataset.test_inputs,
                           dataset.test_labels, dataset.num_classes, dataset.normalization)
    if "classes" in request.forget:
        data = make_unlearning_data(trimmed, channels=channels, forget_classes=request.forget["classes"])
    else:  # positions -> rows of the trimmed train split (both sorted by position)
        kept = positions[keep]
        forget = torch.tensor(forget_positions, dtype=torch.int64)
        rows = torch.nonzero(torch.isin(kept, forget)).flatten()
        data = make_unlearning_data(trimmed, channels=channels, forget_indices=rows)
    return JobInputs(network, data, len(forget_positions))
