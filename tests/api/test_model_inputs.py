"""A model's declared `input_transform` and `augmentation` (docs/inputs.md): parsed into one canonical form,
stored on the model and its version 1, returned by every read; anything else is a 422 naming the field, and
nothing is stored."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import update

from models import Dataset

from .conftest import Service, assert_problem, mlp_weights, upload_dataset

CROP_FLIP = ["random_crop", "horizontal_flip"]


def post_model(
    client: httpx.Client, dataset_id: str, headers: dict[str, str] | None = None, **form: str
) -> httpx.Response:
    data = {
        "name": "m",
        "architecture": "mlp",
        "num_classes": "3",
        "dataset_id": dataset_id,
        "preprocessing": "unit",
    } | form
    return client.post(
        "/v1/models", data=data, headers=headers or {}, files={"weights": ("w.safetensors", mlp_weights(3, (1, 8, 8)))}
    )


def model_count(service: Service) -> int:
    return len(service.client.get("/v1/models", params={"page_size": 100}).json()["items"])


@pytest.mark.parametrize(
    ("form", "transform", "steps"),
    [
        ({}, None, []),
        ({"input_transform": '{"resize": 8}', "augmentation": "crop_flip"}, {"resize": 8}, CROP_FLIP),
        (
            {"input_transform": ' {"center_crop": [3, 2], "resize": [9, 8]} ', "augmentation": "none"},
            {"resize": [9, 8], "center_crop": [3, 2]},
            [],
        ),
        (
            {"input_transform": '{"resize": 12, "center_crop": 8}', "augmentation": '["horizontal_flip"]'},
            {"resize": 12, "center_crop": 8},
            ["horizontal_flip"],
        ),
        ({"augmentation": '["horizontal_flip", "random_crop"]'}, None, ["horizontal_flip", "random_crop"]),
    ],
    ids=["none", "resize-crop-flip", "both-as-lists", "square-crop", "steps-in-order"],
)
def test_the_declaration_is_stored_on_the_model_and_its_first_version(
    service: Service, registered: dict[str, str], form: dict, transform: dict | None, steps: list[str]
) -> None:
    created = post_model(service.client, registered["dataset_id"], **form)
    assert created.status_code == 201, created.text
    model_id = created.json()["id"]
    for body in (
        created.json(),
        service.client.get(f"/v1/models/{model_id}").json(),
        service.client.get(f"/v1/models/{model_id}/versions").json()["items"][0],
    ):
        assert (body["input_transform"], body["augmentation"]) == (transform, steps), body
    listed = {m["id"]: m for m in service.client.get("/v1/models", params={"page_size": 100}).json()["items"]}
    assert listed[model_id]["augmentation"] == steps


BAD_TRANSFORMS = {
    "not json": "resize 8",
    "a list": "[8]",
    "empty object": "{}",
    "other key": '{"resize": 8, "rotate": 90}',
    "zero": '{"resize": 0}',
    "too large": '{"resize": 4097}',
    "float": '{"resize": 8.0}',
    "bool": '{"resize": true}',
    "text": '{"resize": "8"}',
    "three sides": '{"resize": [8, 8, 8]}',
    "negative side": '{"center_crop": [4, -4]}',
    "null": '{"resize": null}',
    "duplicate key": '{"resize": 8, "resize": 9}',
    "NaN": '{"resize": NaN}',
    "deep": '{"resize": ' + "[" * 100 + "]" * 100 + "}",
    "long": '{"resize": 8' + " " * 3000 + "}",
    "crop larger than the image": '{"center_crop": 5}',  # the stored images are 4x4
    "crop larger than the resized image": '{"resize": [8, 6], "center_crop": [8, 7]}',
}
BAD_AUGMENTATIONS = {
    "unknown preset": "flip",
    "unknown step": '["random_crop", "cutmix"]',
    "repeated step": '["horizontal_flip", "horizontal_flip"]',
    "not a list": '{"steps": []}',
    "a step that is not text": "[1]",
    "bad json": '["random_crop"',
    "quoted preset": '"crop_flip"',
}


@pytest.mark.parametrize(
    ("field", "case"),
    [("input_transform", c) for c in BAD_TRANSFORMS] + [("augmentation", c) for c in BAD_AUGMENTATIONS],
)
def test_a_bad_declaration_is_422_naming_the_field_and_nothing_is_stored(
    service: Service, registered: dict[str, str], field: str, case: str
) -> None:
    before = model_count(service)
    value = (BAD_TRANSFORMS if field == "input_transform" else BAD_AUGMENTATIONS)[case]
    body = assert_problem(post_model(service.client, registered["dataset_id"], **{field: value}), 422, field)
    assert [e["loc"] for e in body["errors"]] == [[field]]
    assert model_count(service) == before


@pytest.fixture(scope="module")
def encoded_dataset(service: Service) -> str:
    """A dataset whose rows are stored encoded (images of any size: [C, null, null])."""
    from worker.services import connect

    created = upload_dataset(service.client, name="encoded")
    assert created.status_code == 201, created.text
    with connect(service.settings).factory() as session, session.begin():
        session.execute(
            update(Dataset)
            .where(Dataset.id == created.json()["id"])
            .values(input_encoding="encoded", input_shape=[1, None, None])
        )
    return created.json()["id"]


@pytest.mark.parametrize(
    "transform",
    [None, "", '{"resize": 8}', '{"center_crop": 6}', '{"resize": [8, 6]}'],
    ids=["missing", "empty", "resize", "crop", "resize-both-sides"],
)
def test_encoded_images_need_a_transform_that_fixes_their_size(
    service: Service, encoded_dataset: str, transform: str | None
) -> None:
    form = {} if transform is None else {"input_transform": transform}
    response = post_model(service.client, encoded_dataset, **form)
    if not transform:
        body = assert_problem(response, 422, "input_transform", "no common size")
        assert [e["loc"] for e in body["errors"]] == [["input_transform"]]
    else:
        assert response.status_code == 201, response.text


def test_the_idempotency_key_covers_the_declaration(service: Service, registered: dict[str, str]) -> None:
    key = {"Idempotency-Key": "inputs-declared"}
    first = post_model(
        service.client, registered["dataset_id"], key, input_transform='{"resize": 8}', augmentation="crop_flip"
    )
    again = post_model(
        service.client, registered["dataset_id"], key, input_transform='{"resize": 8}', augmentation="crop_flip"
    )
    assert first.status_code == 201 and again.json()["id"] == first.json()["id"]
    other = post_model(service.client, registered["dataset_id"], key, input_transform='{"resize": 8}')
    assert_problem(other, 422, "different request body")
