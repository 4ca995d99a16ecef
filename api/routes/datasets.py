"""`/v1/datasets`: register labelled image data (safetensors shards + CSV manifest)."""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import APIRouter, File, Form, Response, UploadFile
from sqlalchemy.orm import Session

from api.auth import Principal
from api.deps import SessionDep, SessionRoute, SettingsDep, StoreDep, require
from api.idempotency import IdempotencyKey, create_once, fingerprint
from api.ingest import inspect_shard
from api.manifest import parse_manifest
from api.pagination import PageSize, PageToken
from api.schemas import DatasetOut, Page
from domain import catalog
from domain.inputs import DigitsInt, Line, Prose, text_problem
from domain.problems import Problem, invalid
from models import Dataset, new_id
from models.bulk import insert_samples
from models.objects import claim
from storage import ObjectTooLarge

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], route_class=SessionRoute)


def check_size(upload: UploadFile, limit: int) -> None:
    if upload.size is not None and upload.size > limit:
        raise Problem(413, f"file '{upload.filename}' is {upload.size} bytes; the limit is {limit}")


def file_sha256(upload: UploadFile) -> str:
    upload.file.seek(0)
    digest = hashlib.sha256()
    while chunk := upload.file.read(1 << 20):
        digest.update(chunk)
    upload.file.seek(0)
    return digest.hexdigest()


@router.post("", status_code=201, response_model=DatasetOut)
def create_dataset(
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    response: Response,
    principal: Annotated[Principal, require("datasets:write")],
    name: Annotated[Line, Form(min_length=1, max_length=200)],
    manifest: Annotated[UploadFile, File(description="CSV: sample_id,split,shard,row[,subject_id]")],
    shards: Annotated[
        list[UploadFile],
        File(description="safetensors files with 'inputs' and 'labels', or encoded: 'images', 'offsets' and 'labels'"),
    ],
    description: Annotated[Prose | None, Form(max_length=5000)] = None,
    num_classes: Annotated[DigitsInt | None, Form(ge=2, le=100_000, description="default: largest label + 1")] = None,
    idempotency_key: IdempotencyKey = None,
) -> Dataset:
    for upload in [manifest, *shards]:
        check_size(upload, settings.max_upload_bytes)
    names = [s.filename or "" for s in shards]
    if len(set(names)) != len(names) or "" in names:
        raise invalid("every shard needs a distinct file name", [{"loc": ["shards"], "msg": "duplicate or empty"}])
    if bad_names := [f"shard {i}: file name {p}" for i, n in enumerate(names) if (p := text_problem(n))]:
        raise invalid(bad_names[0], [{"loc": ["shards"], "msg": m} for m in bad_names])
    manifest_sha = file_sha256(manifest)
    body_sha = fingerprint(
        {
            "name": name,
            "description": description,
            "num_classes": num_classes,
            "manifest": manifest_sha,
            "shards": {n: file_sha256(s) for n, s in zip(names, shards, strict=True)},
        }
    )

    def create(db: Session) -> str:
        infos = [inspect_shard(n, s.file) for n, s in zip(names, shards, strict=True)]
        parsed = parse_manifest(manifest.file, infos, num_classes)
        stored = []
        objects: dict[str, UploadFile] = {}  # key: an upload of its content
        for upload_name, upload, info in zip(names, shards, infos, strict=True):
            upload.file.seek(0)
            try:
                obj = store.put_stream("shards", upload.file, max_bytes=settings.max_upload_bytes)
            except ObjectTooLarge as error:
                raise Problem(413, f"shard '{upload_name}' exceeds {error.limit} bytes") from error
            stored.append(
                {"name": upload_name, "key": obj.key, "sha256": obj.sha256, "size": obj.size, "rows": info.rows}
            )
            objects[obj.key] = upload
        for key in sorted(objects):
            claim(db, store, key, objects[key].file)
        dataset_id = new_id("ds")
        db.add(
            Dataset(
                id=dataset_id,
                name=name,
                description=description,
                num_train=parsed.num_train,
                num_test=parsed.num_test,
                num_classes=parsed.num_classes,
                input_shape=list(parsed.input_shape),
                input_dtype=parsed.input_dtype,
                input_encoding=parsed.input_encoding,
                shards=stored,
                manifest_sha256=manifest_sha,
            )
        )
        db.flush()
        for sample in parsed.samples:
            sample["dataset_id"] = dataset_id
        insert_samples(db, parsed.samples)
        return dataset_id

    dataset, response.status_code = create_once(
        session, principal.name, "datasets", idempotency_key, body_sha, create, catalog.get_dataset, 201
    )
    response.headers["Location"] = f"/v1/datasets/{dataset.id}"
    return dataset


@router.get("/{dataset_id}", response_model=DatasetOut)
def get_dataset(dataset_id: str, session: SessionDep, _: Annotated[Principal, require("models:read")]) -> object:
    return catalog.get_dataset(session, dataset_id)


@router.get("", response_model=Page[DatasetOut])
def list_datasets(
    session: SessionDep,
    _: Annotated[Principal, require("models:read")],
    page_size: PageSize = 50,
    page_token: PageToken = None,
) -> object:
    return catalog.page_of_datasets(session, page_size, page_token)
