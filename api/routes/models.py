"""`/v1/models`: register a trained classifier (version 1, validated by a worker), read its versions and
weights, delete one that failed validation."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, File, Form, Header, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import Response, StreamingResponse
from sqlalchemy.orm import Session

from api.auth import Principal
from api.deps import SessionDep, SessionRoute, SettingsDep, StoreDep, require
from api.idempotency import IdempotencyKey, create_once, fingerprint
from api.pagination import PageSize, PageToken
from api.routes.datasets import check_size, file_sha256
from api.schemas import ModelOut, ModelUpdateIn, Page, VersionOut
from api.weights import check_weights_header
from domain import approval, catalog
from domain.architectures import check_architecture_kwargs
from domain.inputs import DigitsInt, Line
from domain.preprocessing import (
    AUGMENTATION_OPTIONS,
    OPTIONS,
    TRANSFORM_OPTIONS,
    parse_architecture_kwargs,
    parse_augmentation,
    parse_input_transform,
    parse_preprocessing,
)
from domain.problems import Problem, invalid
from models import Dataset, Model, ModelVersion, new_id
from models.objects import claim, delete_unless
from storage import ObjectTooLarge, StorageError

router = APIRouter(prefix="/v1/models", tags=["models"], route_class=SessionRoute)
log = logging.getLogger(__name__)


@router.post("", status_code=201, response_model=ModelOut)
def create_model(
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    response: Response,
    principal: Annotated[Principal, require("models:write")],
    name: Annotated[Line, Form(min_length=1, max_length=200)],
    architecture: Annotated[Line, Form(min_length=1, max_length=100)],
    num_classes: Annotated[DigitsInt, Form(ge=2, le=100_000)],
    dataset_id: Annotated[Line, Form(max_length=40)],
    weights: Annotated[UploadFile, File(description="safetensors file of the state_dict")],
    # Required; optional here only so that a missing value gets the 422 that names the options.
    preprocessing: Annotated[str | None, Form(description=f"Required: {OPTIONS}.")] = None,
    architecture_kwargs: Annotated[str | None, Form(description="JSON object of constructor arguments")] = None,
    input_transform: Annotated[
        str | None,
        Form(
            description=f"Resize / center crop before the preprocessing, "
            f"everywhere the model sees data: {TRANSFORM_OPTIONS}. Required "
            "for a dataset of encoded images of mixed sizes."
        ),
    ] = None,
    augmentation: Annotated[
        str | None, Form(description=f"Training steps only: {AUGMENTATION_OPTIONS}; default none.")
    ] = None,
    require_approval: Annotated[
        bool, Form(description="Its deletion requests wait for a key with requests:approve, not the submitter's.")
    ] = False,
    idempotency_key: IdempotencyKey = None,
) -> Model:
    check_size(weights, settings.max_upload_bytes)
    kwargs = parse_architecture_kwargs(architecture_kwargs)
    check_architecture_kwargs(kwargs)  # no file paths, downloads or devices: 422 before anything is stored
    steps = parse_augmentation(augmentation)
    body_sha = fingerprint(
        {
            "name": name,
            "architecture": architecture,
            "num_classes": num_classes,
            "dataset_id": dataset_id,
            "weights": file_sha256(weights),
            "preprocessing": preprocessing,
            "architecture_kwargs": kwargs,
        }
        # only when declared: keys replayed from before these fields keep their fingerprint
        | ({"input_transform": input_transform} if input_transform else {})
        | ({"augmentation": steps} if steps else {})
        | ({"require_approval": True} if require_approval else {})
    )

    def create(db: Session) -> str:
        dataset = db.get(Dataset, dataset_id)
        if dataset is None:
            raise invalid(f"unknown dataset '{dataset_id}'", [{"loc": ["dataset_id"], "msg": "unknown dataset"}])
        if num_classes < dataset.num_classes:
            raise invalid(
                f"num_classes {num_classes} is below the dataset's {dataset.num_classes} classes",
                [{"loc": ["num_classes"], "msg": "fewer classes than the dataset's labels"}],
            )
        if preprocessing is None:
            raise invalid(f"preprocessing is required: give {OPTIONS}", [{"loc": ["preprocessing"], "msg": "missing"}])
        declared = parse_preprocessing(preprocessing, dataset.input_shape[0])
        transform = parse_input_transform(input_transform, dataset.input_shape)  # encoded images need a size
        db.commit()  # the read ends: no connection (nor SQLite's write lock) is held through the upload
        weights.file.seek(0)
        check_weights_header(weights.file)  # cheap checks here; loading into the architecture is a worker's
        try:
            obj = store.put_stream("weights", weights.file, max_bytes=settings.max_upload_bytes)
        except ObjectTooLarge as error:
            raise Problem(413, f"weights exceed {error.limit} bytes") from error
        claim(db, store, obj.key, weights.file)
        model_id = new_id("mdl")
        catalog.register_model(
            db,
            Model(
                id=model_id,
                name=name,
                architecture=architecture,
                num_classes=num_classes,
                architecture_kwargs=kwargs,
                dataset_id=dataset_id,
                current_version=1,
                preprocessing=declared,
                input_transform=transform,
                augmentation=steps,
                require_approval=require_approval,
            ),
            ModelVersion(
                model_id=model_id,
                version=1,
                sha256=obj.sha256,
                storage_key=obj.key,
                size=obj.size,
                preprocessing=declared,
                input_transform=transform,
                augmentation=steps,
            ),
        )
        return model_id

    model, response.status_code = create_once(
        session, principal.name, "models", idempotency_key, body_sha, create, catalog.get_model, 201
    )
    response.headers["Location"] = f"/v1/models/{model.id}"
    return model


@router.get("/{model_id}", response_model=ModelOut)
def get_model(model_id: str, session: SessionDep, _: Annotated[Principal, require("models:read")]) -> object:
    return catalog.get_model(session, model_id)


@router.patch("/{model_id}", response_model=ModelOut)
def update_model(
    model_id: str, body: ModelUpdateIn, session: SessionDep, _: Annotated[Principal, require("requests:approve")]
) -> Model:
    """Whether the model's deletion requests wait for approval: the approvers' call (requests:approve), not that
    of the keys the gate holds (requests:write, models:write)."""
    return approval.set_required(session, model_id, body.require_approval)


@router.delete(
    "/{model_id}",
    status_code=204,
    response_class=Response,
    responses={409: {"description": "the model is ready (its versions and evidence stay) or still validating"}},
)
def delete_model(
    model_id: str, session: SessionDep, store: StoreDep, _: Annotated[Principal, require("models:write")]
) -> Response:
    """Delete a model that failed validation (state `invalid`) and its stored weights."""
    keys = catalog.delete_invalid_model(session, model_id)
    session.commit()
    for key in keys:  # each read again under its lock: a model registered meanwhile with these bytes keeps them
        try:
            delete_unless(session, store, key, lambda session, key: not catalog.unreferenced(session, [key]))
        except StorageError:  # the rows are gone: the sweeper deletes the orphan later (MCU_ORPHAN_GRACE_SECONDS)
            log.warning("could not delete the weights %s of deleted model %s", key, model_id, exc_info=True)
    return Response(status_code=204)


@router.get("", response_model=Page[ModelOut])
def list_models(
    session: SessionDep,
    _: Annotated[Principal, require("models:read")],
    page_size: PageSize = 50,
    page_token: PageToken = None,
) -> object:
    return catalog.page_of_models(session, page_size, page_token)


@router.get("/{model_id}/versions", response_model=Page[VersionOut])
def list_versions(
    model_id: str,
    session: SessionDep,
    _: Annotated[Principal, require("models:read")],
    page_size: PageSize = 50,
    page_token: PageToken = None,
) -> object:
    return catalog.page_of_versions(session, model_id, page_size, page_token)


@router.get(
    "/{model_id}/versions/{version}/weights",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "safetensors bytes"},
        410: {"description": "deleted under the retention policy (MCU_KEEP_SUPERSEDED_VERSIONS)"},
    },
)
def download_weights(
    model_id: str,
    version: Annotated[int, PathParam(ge=1, le=2**31 - 1)],
    session: SessionDep,
    store: StoreDep,
    _: Annotated[Principal, require("models:read")],
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    row = catalog.get_version(session, model_id, version)
    session.close()  # the row is read: the object store is asked, and the weights sent, without a connection
    if row.weights_deleted_at is not None:
        raise Problem(
            410,
            f"the weights of version {version} of model '{model_id}' were deleted under the retention "
            f"policy on {row.weights_deleted_at.isoformat()}: a later version erased data this one was "
            "trained on (its metadata and sha256 stay)",
            slug="weights-deleted",
            title="Weights deleted",
        )
    etag = f'"{row.sha256}"'
    if if_none_match in (etag, row.sha256):
        return Response(status_code=304, headers={"ETag": etag})
    return StreamingResponse(
        store.iter_chunks(row.storage_key),
        media_type="application/octet-stream",
        headers={
            "ETag": etag,
            "Content-Length": str(row.size),
            "Content-Disposition": f'attachment; filename="{model_id}-v{version}.safetensors"',
        },
    )
