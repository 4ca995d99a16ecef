"""Every bad input of docs/api.md gets its status code and a problem+json body naming the problem; none is a 500.

All requests go through `api`, a client whose response hook fails the test on any 5xx.
"""

from __future__ import annotations

import base64
import io
import json
import pickle
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from settings import Settings
from storage import save_numpy
from tests.support import wait_for_state

from .conftest import (
    BOOTSTRAP_KEY,
    Service,
    assert_problem,
    manifest_bytes,
    mlp_weights,
    serve,
    shard_bytes,
    simple_manifest,
    upload_model,
    validated,
)


def _no_server_error(response: httpx.Response) -> None:
    if response.status_code >= 500:
        response.read()
        raise AssertionError(
            f"{response.request.method} {response.request.url} -> {response.status_code}: {response.text}"
        )


def no_5xx_client(url: str) -> httpx.Client:
    return httpx.Client(
        base_url=url,
        timeout=60,
        headers={"Authorization": f"Bearer {BOOTSTRAP_KEY}"},
        event_hooks={"response": [_no_server_error]},
    )


@pytest.fixture(scope="module")
def api(service: Service) -> Iterator[httpx.Client]:
    with no_5xx_client(service.url) as client:
        yield client


def error_locs(body: dict[str, Any]) -> list[list[Any]]:
    return [e["loc"] for e in body.get("errors") or []]


# --- datasets ------------------------------------------------------------------------------------------


def labelled_shard(labels: list[int], shape: tuple[int, ...] = (1, 4, 4), dtype: str = "uint8") -> bytes:
    inputs = np.zeros((len(labels), *shape), dtype=dtype)
    return save_numpy({"inputs": inputs, "labels": np.asarray(labels, dtype=np.int64)})


def post_dataset(client: httpx.Client, manifest: bytes, shards: dict[str, bytes], **form: str) -> httpx.Response:
    files = [("manifest", ("manifest.csv", manifest))] + [("shards", (n, b)) for n, b in shards.items()]
    return client.post("/v1/datasets", data={"name": "bad", **form}, files=files)


A = "a.safetensors"
B = "b.safetensors"
TWO_SHARD_MANIFEST = manifest_bytes(
    [("x0", "train", A, 0, None), ("x1", "train", A, 1, None), ("y0", "test", B, 0, None), ("y1", "test", B, 1, None)]
)

NESTED_HEADER = (200_005).to_bytes(8, "little") + b'{"a":' * 40_001  # objects nested 40,001 deep

DATASET_PROBLEMS = {
    "unknown shard": (
        manifest_bytes([("x0", "train", A, 0, None), ("x1", "test", "zz.safetensors", 0, None)]),
        {A: shard_bytes(4)},
        {},
        ["unknown shard 'zz.safetensors'", "line 3"],
    ),
    "row out of range": (
        manifest_bytes([("x0", "train", A, 0, None), ("x1", "test", A, 4, None)]),
        {A: shard_bytes(4)},
        {},
        ["row 4 out of range", "line 3"],
    ),
    "negative row": (
        manifest_bytes([("x0", "train", A, 0, None), ("x1", "test", A, -1, None)]),
        {A: shard_bytes(4)},
        {},
        ["row must be a non-negative integer, got '-1'"],
    ),
    "row not an integer": (
        b"sample_id,split,shard,row\nx0,train,a.safetensors,0\nx1,test,a.safetensors,one\n",
        {A: shard_bytes(4)},
        {},
        ["row must be a non-negative integer"],
    ),
    "duplicate sample_id": (
        manifest_bytes([("x0", "train", A, 0, None), ("x1", "test", A, 1, None), ("x0", "test", A, 2, None)]),
        {A: shard_bytes(4)},
        {},
        ["duplicate sample_id 'x0'", "line 4"],
    ),
    "unknown split": (
        manifest_bytes([("x0", "train", A, 0, None), ("x1", "validation", A, 1, None)]),
        {A: shard_bytes(4)},
        {},
        ["split must be 'train' or 'test'"],
    ),
    "shape mismatch between shards": (
        TWO_SHARD_MANIFEST,
        {A: shard_bytes(4), B: shard_bytes(4, shape=(1, 5, 5))},
        {},
        ["shards differ", B],
    ),
    "dtype mismatch between shards": (
        TWO_SHARD_MANIFEST,
        {A: shard_bytes(4), B: labelled_shard([0, 1, 2, 0], dtype="float32")},
        {},
        ["shards differ", "float32"],
    ),
    "negative label": (simple_manifest(3, 1), {A: labelled_shard([0, 1, -1, 0])}, {}, ["label -1", "out of range"]),
    "label above num_classes": (
        simple_manifest(3, 3),
        {A: shard_bytes(6, num_classes=3)},
        {"num_classes": "2"},
        ["label 2", "out of range [0, 2)"],
    ),
    "no train rows": (simple_manifest(0, 4), {A: shard_bytes(4)}, {}, ["no train rows"]),
    "no test rows": (simple_manifest(4, 0), {A: shard_bytes(4)}, {}, ["no test rows"]),
    "empty manifest": (b"sample_id,split,shard,row\n", {A: shard_bytes(4)}, {}, ["no train rows"]),
    "a single class": (simple_manifest(3, 1), {A: shard_bytes(4, num_classes=1)}, {}, ["at least 2 classes"]),
    "pickle as a shard": (
        simple_manifest(3, 1),
        {A: pickle.dumps({"inputs": [[0]], "labels": [0]})},
        {},
        ["shard 'a.safetensors'", "pickle"],
    ),
    "shard without labels": (
        simple_manifest(3, 1),
        {A: save_numpy({"inputs": np.zeros((4, 1, 4, 4), np.uint8)})},
        {},
        ["'inputs' and 'labels'"],
    ),
    "int32 labels": (
        simple_manifest(3, 1),
        {A: save_numpy({"inputs": np.zeros((4, 1, 4, 4), np.uint8), "labels": np.zeros(4, np.int32)})},
        {},
        ["int64"],
    ),
    "inputs not 4-d": (
        simple_manifest(3, 1),
        {A: save_numpy({"inputs": np.zeros((4, 16), np.uint8), "labels": np.zeros(4, np.int64)})},
        {},
        ["[N, C, H, W]"],
    ),
    "missing manifest columns": (
        b"sample_id,split,row\nx0,train,0\nx1,test,1\n",
        {A: shard_bytes(4)},
        {},
        ["missing columns", "shard"],
    ),
    "manifest not UTF-8": (
        b"sample_id,split,shard,row\n\xff\xfe,train,a.safetensors,0\n",
        {A: shard_bytes(4)},
        {},
        ["not UTF-8"],
    ),
    "num_classes below 2": (simple_manifest(3, 1), {A: shard_bytes(4)}, {"num_classes": "1"}, ["num_classes"]),
    "sample_id of 200 KB": (
        manifest_bytes([("x" * 200_000, "train", A, 0, None), ("x1", "test", A, 1, None)]),
        {A: shard_bytes(4)},
        {},
        ["not a readable CSV"],
    ),
    "sample_id over 200 characters": (
        manifest_bytes([("x" * 201, "train", A, 0, None), ("x1", "test", A, 1, None)]),
        {A: shard_bytes(4)},
        {},
        ["at most 200 characters", "line 2"],
    ),
    "row with an underscore": (
        b"sample_id,split,shard,row\nx0,train,a.safetensors,0\nx1,test,a.safetensors,0_1\n",
        {A: shard_bytes(4)},
        {},
        ["non-negative integer", "0_1"],
    ),
    "empty images": (
        simple_manifest(3, 1),
        {A: save_numpy({"inputs": np.zeros((4, 0, 0, 0), np.uint8), "labels": np.zeros(4, np.int64)})},
        {},
        ["empty"],
    ),
    "label 2^63-1 without num_classes": (
        simple_manifest(3, 1),
        {A: labelled_shard([0, 1, 2**63 - 1, 0])},
        {},
        ["out of range [0, 100000)"],
    ),
    "header nested 40,001 deep": (simple_manifest(3, 1), {A: NESTED_HEADER}, {}, ["nested too deeply"]),
}


@pytest.mark.parametrize("case", DATASET_PROBLEMS)
def test_dataset_upload_problem_is_422(api: httpx.Client, case: str) -> None:
    manifest, shards, form, fragments = DATASET_PROBLEMS[case]
    assert_problem(post_dataset(api, manifest, shards, **form), 422, *fragments)


def test_dataset_shards_need_distinct_names(api: httpx.Client) -> None:
    files = [
        ("manifest", ("m.csv", simple_manifest(3, 1))),
        ("shards", (A, shard_bytes(4))),
        ("shards", (A, shard_bytes(4))),
    ]
    assert_problem(api.post("/v1/datasets", data={"name": "dup"}, files=files), 422, "distinct file name")


def test_dataset_upload_without_files_is_422(api: httpx.Client) -> None:
    body = assert_problem(api.post("/v1/datasets", data={"name": "nothing"}), 422)
    assert ["manifest"] in error_locs(body) and ["shards"] in error_locs(body)


# --- models --------------------------------------------------------------------------------------------


def mlp_state(num_classes: int = 3) -> dict[str, Any]:
    from unlearning.architectures import seeded_init

    return seeded_init("mlp", num_classes, (1, 4, 4), 0).state_dict()


def save_state(state: dict[str, Any]) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in state.items()})


def torch_zip() -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(mlp_state(), buffer)
    return buffer.getvalue()


def test_model_for_unknown_dataset_is_422(api: httpx.Client) -> None:
    body = assert_problem(upload_model(api, "ds_does_not_exist"), 422, "unknown dataset 'ds_does_not_exist'")
    assert ["dataset_id"] in error_locs(body)


def test_model_with_unknown_architecture_is_invalid(service: Service, registered: dict[str, str]) -> None:
    model = validated(service, upload_model(service.client, registered["dataset_id"], architecture="resnet9000"))
    assert model["state"] == "invalid" and "unknown architecture 'resnet9000'" in model["error"]["detail"]
    assert ["architecture"] in [e["loc"] for e in model["error"]["errors"]]


def test_model_weights_that_do_not_fit_name_each_key(service: Service, registered: dict[str, str]) -> None:
    import torch

    state = mlp_state()
    del state["3.bias"]
    state["extra.weight"] = torch.zeros(2)
    state["5.weight"] = torch.zeros(7, 128)
    model = validated(service, upload_model(service.client, registered["dataset_id"], weights=save_state(state)))
    assert model["state"] == "invalid" and "3 problems" in model["error"]["detail"]
    errors = {tuple(e["loc"]): e["msg"] for e in model["error"]["errors"]}
    assert errors[("weights", "3.bias")] == "missing key"
    assert errors[("weights", "extra.weight")] == "unexpected key"
    assert "expected [3, 128]" in errors[("weights", "5.weight")]
    # An invalid model takes no deletion requests.
    response = service.client.post(
        "/v1/deletion-requests", json={"model_id": model["id"], "forget": {"sample_ids": ["s1"]}}
    )
    assert_problem(response, 409, "invalid, not ready")


def test_model_weights_missing_one_key_are_invalid(service: Service, registered: dict[str, str]) -> None:
    """Loading is strict: a state_dict short of one tensor would otherwise load with it left at random."""
    state = mlp_state()
    del state["1.bias"]
    model = validated(service, upload_model(service.client, registered["dataset_id"], weights=save_state(state)))
    assert model["state"] == "invalid"
    assert [e["loc"] for e in model["error"]["errors"]] == [["weights", "1.bias"]]


def test_model_weights_for_other_num_classes_is_invalid(service: Service, registered: dict[str, str]) -> None:
    """Weights of a 3-class head registered as 4 classes: the head's shape is named."""
    model = validated(
        service, upload_model(service.client, registered["dataset_id"], weights=mlp_weights(3), num_classes=4)
    )
    assert model["state"] == "invalid"
    assert ["weights", "5.weight"] in [e["loc"] for e in model["error"]["errors"]]


def test_model_weights_of_integers_are_422(api: httpx.Client, registered: dict[str, str]) -> None:
    import torch

    state = mlp_state() | {"1.weight": torch.zeros(128, 16, dtype=torch.int32)}
    body = assert_problem(
        upload_model(api, registered["dataset_id"], weights=save_state(state)), 422, "floating point", "1.weight"
    )
    assert ["weights", "1.weight"] in error_locs(body)


@pytest.mark.parametrize(
    ("weights", "fragment"),
    [
        (pickle.dumps({"1.weight": [[0.0]]}), "pickle"),
        (None, "torch.save"),  # torch.save's zip format, built in the test
        (b"", "0 bytes"),
        (b"\x00" * 8, "not a valid safetensors"),
        (b"not safetensors at all, just text", "safetensors"),
        (NESTED_HEADER, "nested too deeply"),
    ],
    ids=["pickle", "torch-save-zip", "empty", "zero-header", "text", "nested-header"],
)
def test_model_weights_not_safetensors_is_422(
    api: httpx.Client, registered: dict[str, str], weights: bytes | None, fragment: str
) -> None:
    response = upload_model(api, registered["dataset_id"], weights=torch_zip() if weights is None else weights)
    body = assert_problem(response, 422, fragment)
    assert ["weights"] in error_locs(body)


def test_model_num_classes_below_the_datasets_is_422(api: httpx.Client, registered: dict[str, str]) -> None:
    body = assert_problem(
        upload_model(api, registered["dataset_id"], weights=mlp_weights(2), num_classes=2),
        422,
        "below the dataset's 3 classes",
    )
    assert ["num_classes"] in error_locs(body)


@pytest.mark.parametrize("num_classes", ["1", "many", "100001"])
def test_model_num_classes_form_field_is_validated(
    api: httpx.Client, registered: dict[str, str], num_classes: str
) -> None:
    response = api.post(
        "/v1/models",
        data={
            "name": "m",
            "architecture": "mlp",
            "num_classes": num_classes,
            "dataset_id": registered["dataset_id"],
            "preprocessing": "unit",
        },
        files={"weights": ("w.safetensors", b"x")},
    )
    assert ["num_classes"] in error_locs(assert_problem(response, 422, "num_classes"))


# --- deletion requests ---------------------------------------------------------------------------------

TRAIN_IDS = [f"s{i}" for i in range(40)]  # the `registered` dataset: s0..s39 train, s40..s59 test, 3 classes

REQUEST_PROBLEMS: dict[str, tuple[dict[str, Any], str, list[Any] | None]] = {
    "unknown model": ({"model_id": "mdl_does_not_exist"}, "unknown model 'mdl_does_not_exist'", ["model_id"]),
    "unknown sample ids": (
        {"forget": {"sample_ids": ["s1", "ghost-1", "ghost-2"]}},
        "'ghost-1', 'ghost-2'",
        ["forget", "sample_ids"],
    ),
    "test-split sample id": ({"forget": {"sample_ids": ["s45"]}}, "test split", ["forget", "sample_ids"]),
    "unknown subject ids": (
        {"forget": {"subject_ids": ["subject1", "nobody"]}},
        "unknown subject ids: 'nobody'",
        ["forget", "subject_ids"],
    ),
    "class out of range": ({"forget": {"classes": [1, 3]}}, "classes out of range [0, 3): 3", ["forget", "classes"]),
    "negative class": ({"forget": {"classes": [-1]}}, "greater than or equal to 0", ["forget", "classes", 0]),
    "class as a string": ({"forget": {"classes": ["3"]}}, "valid integer", ["forget", "classes", 0]),
    "class as a boolean": ({"forget": {"classes": [True]}}, "valid integer", ["forget", "classes", 0]),
    "retrain as base_method": ({"base_method": "retrain"}, "not offered", ["base_method"]),
    # Beyond 2^53: refused by the strict input layer (domain/inputs.py) before the config is read.
    "config.seed 10^400": ({"config": {"seed": 10**400}}, "finite number within", ["config", "seed"]),
    "config.epochs 10^400": ({"config": {"epochs": 10**400}}, "finite number", ["config", "epochs"]),
    "config.lr 10^400": ({"config": {"lr": 10**400}}, "finite", ["config", "lr"]),
    "config.mask value 2^53 + 1": (
        {"config": {"mask": {"retain_filter": 2**53 + 1}}},
        "finite number within",
        ["config", "mask", "retain_filter"],
    ),
    "config.seed 2^32": ({"config": {"seed": 2**32}}, "must be <=", ["config", "seed"]),
    "callback_url port 99999": ({"callback_url": "http://127.0.0.1:99999/x"}, "callback_url", ["callback_url"]),
    "callback_url port abc": ({"callback_url": "http://127.0.0.1:abc/x"}, "callback_url", ["callback_url"]),
    "callback_url port -1": ({"callback_url": "http://127.0.0.1:-1/x"}, "callback_url", ["callback_url"]),
    "empty sample ids": ({"forget": {"sample_ids": []}}, "at least 1 item", ["forget", "sample_ids"]),
    "empty subject ids": ({"forget": {"subject_ids": []}}, "at least 1 item", ["forget", "subject_ids"]),
    "empty classes": ({"forget": {"classes": []}}, "at least 1 item", ["forget", "classes"]),
    "no selector": ({"forget": {}}, "exactly one of", ["forget"]),
    "two selectors": ({"forget": {"sample_ids": ["s0"], "classes": [0]}}, "exactly one of", ["forget"]),
    "whole training set by class": ({"forget": {"classes": [0, 1, 2]}}, "whole training set", ["forget"]),
    "whole training set by id": ({"forget": {"sample_ids": TRAIN_IDS}}, "whole training set", ["forget"]),
    "unknown forget field": ({"forget": {"sample_ids": ["s0"], "rows": [1]}}, "rows", ["forget", "rows"]),
    "unknown top-level field": ({"epochz": 3}, "epochz", ["epochz"]),
    "unknown config key": ({"config": {"epochz": 3}}, "epochz", ["config", "epochz"]),
    "unknown nested config key": (
        {"config": {"mask": {"forget_reserv": 0.4}}},
        "forget_reserv",
        ["config", "mask", "forget_reserv"],
    ),
    "config not an object": ({"config": [1, 2]}, "config", ["config"]),
    "config.mask not an object": ({"config": {"mask": 0.5}}, "must be an object", ["config", "mask"]),
    "bad base_method": ({"base_method": "forget_harder"}, "unknown base method 'forget_harder'", ["base_method"]),
    "config.epochs 0": ({"config": {"epochs": 0}}, "must be >= 1", ["config", "epochs"]),
    "config.epochs not an integer": ({"config": {"epochs": 2.5}}, "must be an integer", ["config", "epochs"]),
    "config.lr negative": ({"config": {"lr": -0.1}}, "must be > 0", ["config", "lr"]),
    "config.beta unknown word": ({"config": {"beta": "huge"}}, "adaptive", ["config", "beta"]),
    "config.base.lr zero": ({"config": {"base": {"lr": 0}}}, "must be > 0", ["config", "base", "lr"]),
    "bad selection mode": ({"selection": "sometimes"}, "selection", ["selection"]),
    "callback_url not http": ({"callback_url": "ftp://example.com/x"}, "callback_url", ["callback_url"]),
    "callback_url relative": ({"callback_url": "/hook"}, "callback_url", ["callback_url"]),
    "callback_url host off the allow-list": (
        {"callback_url": "https://example.com/hook"},
        "allow-list",
        ["callback_url"],
    ),
    "model_id missing": ({"model_id": None}, "model_id", ["model_id"]),
}


def request_body(model_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    body = {"model_id": model_id, "forget": {"sample_ids": ["s0", "s1"]}} | changes
    return {k: v for k, v in body.items() if v is not None}


@pytest.mark.parametrize("case", REQUEST_PROBLEMS)
def test_deletion_request_problem_is_422(api: httpx.Client, registered: dict[str, str], case: str) -> None:
    changes, fragment, loc = REQUEST_PROBLEMS[case]
    response = api.post("/v1/deletion-requests", json=request_body(registered["model_id"], changes))
    body = assert_problem(response, 422, fragment)
    if loc is not None:
        assert loc in error_locs(body), body


@pytest.mark.parametrize("content", [b"{not json", b"[]", b"null", b'"text"'], ids=["broken", "list", "null", "str"])
def test_deletion_request_body_not_an_object_is_422(api: httpx.Client, content: bytes) -> None:
    response = api.post("/v1/deletion-requests", content=content, headers={"Content-Type": "application/json"})
    assert_problem(response, 422)


@pytest.fixture(scope="module")
def cancelled_request(api: httpx.Client, registered: dict[str, str]) -> str:
    """A request cancelled right after submission: no curve, not awaiting selection, finished."""
    created = api.post(
        "/v1/deletion-requests",
        json={"model_id": registered["model_id"], "forget": {"sample_ids": ["s3"]}, "external_id": "bad-input-test"},
    )
    assert created.status_code == 202, created.text
    request_id = created.json()["id"]
    cancelled = api.post(f"/v1/deletion-requests/{request_id}/cancel")
    assert cancelled.status_code == 202, cancelled.text
    assert wait_for_state(api, request_id, ("cancelled",), timeout=30)["state"] == "cancelled"
    return request_id


@pytest.mark.parametrize(
    "body",
    [{"t": 1.5}, {"t": -0.01}, {"t": "half"}, {"t": None}, {}, {"t": 0.5, "x": 1}, {"t": True}, {"t": "0.5"}],
    ids=["above-1", "below-0", "string", "null", "missing", "extra-field", "true", "numeric-string"],
)
def test_selection_with_bad_t_is_422(api: httpx.Client, cancelled_request: str, body: dict[str, Any]) -> None:
    response = api.post(f"/v1/deletion-requests/{cancelled_request}/selection", json=body)
    assert_problem(response, 422)


@pytest.mark.parametrize("content", [b'{"t": NaN}', b'{"t": Infinity}', b'{"t": -Infinity}'])
def test_selection_with_non_finite_t_is_422(api: httpx.Client, cancelled_request: str, content: bytes) -> None:
    """Python's JSON parser accepts NaN and Infinity; they must still fail the [0, 1] check."""
    response = api.post(
        f"/v1/deletion-requests/{cancelled_request}/selection",
        content=content,
        headers={"Content-Type": "application/json"},
    )
    assert ["t"] in error_locs(assert_problem(response, 422))


def test_non_finite_config_value_is_422(api: httpx.Client, registered: dict[str, str]) -> None:
    content = json.dumps(
        {"model_id": registered["model_id"], "forget": {"sample_ids": ["s0"]}, "config": {"lr": float("nan")}}
    ).encode()  # json.dumps writes NaN
    response = api.post("/v1/deletion-requests", content=content, headers={"Content-Type": "application/json"})
    assert ["config", "lr"] in error_locs(assert_problem(response, 422, "finite"))


@pytest.mark.parametrize("t", [0.0, 1.0])
def test_selection_outside_awaiting_selection_is_409(api: httpx.Client, cancelled_request: str, t: float) -> None:
    response = api.post(f"/v1/deletion-requests/{cancelled_request}/selection", json={"t": t})
    assert_problem(response, 409, "awaiting_selection", "cancelled")


def test_cancel_of_cancelled_request_is_409(api: httpx.Client, cancelled_request: str) -> None:
    assert_problem(api.post(f"/v1/deletion-requests/{cancelled_request}/cancel"), 409, "already cancelled")


def test_curve_before_it_is_ready_is_409(api: httpx.Client, cancelled_request: str) -> None:
    assert_problem(api.get(f"/v1/deletion-requests/{cancelled_request}/curve"), 409, "not ready")


def test_list_requests_with_unknown_state_is_422(api: httpx.Client) -> None:
    assert_problem(api.get("/v1/deletion-requests", params={"state": "done"}), 422, "'queued', 'running'")


# --- unknown ids, pagination ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/v1/datasets/ds_nope",
        "/v1/models/mdl_nope",
        "/v1/models/mdl_nope/versions",
        "/v1/models/mdl_nope/versions/1/weights",
        "/v1/deletion-requests/req_nope",
        "/v1/deletion-requests/req_nope/curve",
        "/v1/deletion-requests/req_nope/events",
    ],
)
def test_get_unknown_id_is_404(api: httpx.Client, path: str) -> None:
    assert_problem(api.get(path), 404, "nope")


@pytest.mark.parametrize("action", ["cancel", "selection"])
def test_post_to_unknown_request_is_404(api: httpx.Client, action: str) -> None:
    assert_problem(api.post(f"/v1/deletion-requests/req_nope/{action}", json={"t": 0.5}), 404, "req_nope")


def test_unknown_version_weights_is_404(api: httpx.Client, registered: dict[str, str]) -> None:
    model_id = registered["model_id"]
    assert_problem(api.get(f"/v1/models/{model_id}/versions/99/weights"), 404, "no version 99")
    assert_problem(api.get(f"/v1/models/{model_id}/versions/one/weights"), 422, "version")


@pytest.mark.parametrize("path", ["/v1/datasets", "/v1/models", "/v1/deletion-requests"])
@pytest.mark.parametrize(
    "params",
    [
        {"page_token": "not-a-token"},
        {"page_token": "!!!"},
        {"page_token": "bnVsbA"},  # base64 of `null`
        {"page_token": "eyJjIjogNSwgImkiOiAxfQ"},  # base64 of {"c": 5, "i": 1}
        {"page_size": "0"},
        {"page_size": "501"},
        {"page_size": "-1"},
        {"page_size": "ten"},
    ],
    ids=["garbage", "bang", "null", "wrong-types", "size-0", "size-501", "size-negative", "size-text"],
)
def test_bad_pagination_is_422(api: httpx.Client, path: str, params: dict[str, str]) -> None:
    assert_problem(api.get(path, params=params), 422, next(iter(params)))


def forged_token(created: str, id_: str = "x") -> str:
    return base64.urlsafe_b64encode(json.dumps({"c": created, "i": id_}).encode()).decode().rstrip("=")


@pytest.mark.parametrize("path", ["/v1/datasets", "/v1/deletion-requests"])
def test_forged_page_token_far_in_the_future_is_422(api: httpx.Client, path: str) -> None:
    """Decodes fine but overflows when converted to UTC (this used to be a 500 on both backends)."""
    response = api.get(path, params={"page_token": forged_token("9999-12-31T23:59:59-14:00")})
    assert_problem(response, 422, "page_token")


@pytest.mark.parametrize("created", ["2020-01-01T00:00:00", "2020-01-01T00:00:00+05:00", "0001-01-01T00:00:00-05:00"])
def test_forged_page_token_in_range_is_harmless(api: httpx.Client, created: str) -> None:
    response = api.get("/v1/datasets", params={"page_token": forged_token(created)})
    assert response.status_code == 200, response.text
    assert response.json() == {"items": [], "next_page_token": None}


@pytest.mark.parametrize("version", ["0", "-1", str(2**31), str(2**63), str(2**70)])
def test_weights_version_out_of_range_is_422(api: httpx.Client, registered: dict[str, str], version: str) -> None:
    """Used to be a 500 on SQLite for versions beyond 64 bits."""
    response = api.get(f"/v1/models/{registered['model_id']}/versions/{version}/weights")
    assert ["path", "version"] in error_locs(assert_problem(response, 422, "version"))


# --- NUL characters: Postgres refuses them in text (these used to be 500s) ------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/v1/datasets/a%00b",
        "/v1/models/a%00b",
        "/v1/models/a%00b/versions",
        "/v1/models/a%00b/versions/1/weights",
        "/v1/deletion-requests/a%00b",
        "/v1/deletion-requests/a%00b/curve",
        "/v1/deletion-requests/a%00b/events",
    ],
)
def test_nul_in_path_id_is_a_client_error(api: httpx.Client, path: str) -> None:
    response = api.get(path)  # SQLite looks the id up (404); Postgres refuses it (422)
    assert response.status_code in (404, 422), response.text
    assert_problem(response, response.status_code)  # the status is checked above; here the problem body


def test_nul_in_query_is_not_a_server_error(api: httpx.Client) -> None:
    for params in ({"model_id": "a\x00b"}, {"page_token": forged_token("2020-01-01T00:00:00+00:00", "\x00")}):
        response = api.get("/v1/deletion-requests", params=params)
        assert response.status_code in (200, 422), response.text


@pytest.mark.parametrize(
    "changes",
    [
        {"model_id": "mdl\x00"},
        {"forget": {"sample_ids": ["s\x000"]}},
        {"forget": {"subject_ids": ["subject\x001"]}},
    ],
    ids=["model_id", "sample_ids", "subject_ids"],
)
def test_nul_in_deletion_request_ids_is_422(
    api: httpx.Client, registered: dict[str, str], changes: dict[str, Any]
) -> None:
    assert_problem(api.post("/v1/deletion-requests", json=request_body(registered["model_id"], changes)), 422)


def test_nul_in_model_dataset_id_is_422(api: httpx.Client) -> None:
    assert_problem(upload_model(api, "ds\x00"), 422)


def test_nul_in_manifest_names_the_line(api: httpx.Client) -> None:
    manifest = manifest_bytes(
        [("x0", "train", A, 0, None), ("x\x001", "train", A, 1, None), ("x2", "test", A, 2, "subject\x00")]
    )
    body = assert_problem(post_dataset(api, manifest, {A: shard_bytes(4)}), 422, "NUL")
    assert ["manifest", "line 3"] in error_locs(body) and ["manifest", "line 4"] in error_locs(body)


@pytest.mark.parametrize("path", ["/v1/datasets", "/v1/models", "/v1/deletion-requests"])
def test_page_size_bounds_are_accepted(api: httpx.Client, path: str) -> None:
    for size in ("1", "500"):
        response = api.get(path, params={"page_size": size})
        assert response.status_code == 200, response.text


# --- upload size limit ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_limit_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A separate embedded (SQLite) service whose uploads may be at most 512 bytes per file."""
    from api.app import create_app

    settings = Settings(
        data_dir=tmp_path_factory.mktemp("tiny-limit"), bootstrap_api_key=BOOTSTRAP_KEY, max_upload_bytes=512
    )
    server, thread, url = serve(create_app(settings))
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_dataset_upload_over_the_limit_is_413(tiny_limit_url: str) -> None:
    with no_5xx_client(tiny_limit_url) as client:
        response = post_dataset(client, simple_manifest(4, 2), {A: shard_bytes(64)})
        assert_problem(response, 413, "a.safetensors", "limit is 512")
        small = post_dataset(client, simple_manifest(4, 2), {A: shard_bytes(6)})  # under the limit: accepted
        assert small.status_code == 201, small.text


def test_model_upload_over_the_limit_is_413(tiny_limit_url: str) -> None:
    with no_5xx_client(tiny_limit_url) as client:
        assert_problem(upload_model(client, "ds_any"), 413, "w.safetensors", "limit is 512")


@pytest.mark.parametrize(
    "preprocessing",
    [
        None,
        "",
        "bogus",
        '{"mean": [0.5]}',
        '{"mean": [0.5, 0.5], "std": [0.2, 0.2]}',
        '{"mean": [0.5], "std": [0]}',
        '{"mean": ["a"], "std": [1]}',
        '{"mean": [NaN], "std": [1]}',
        '{"mean": [0.5], "std": [1], "x": 1}',
        "[" * 5000,
        "x" * 3000,
    ],
    ids=[
        "missing",
        "empty",
        "unknown-preset",
        "no-std",
        "two-channels",
        "zero-std",
        "text",
        "nan",
        "extra-key",
        "deep",
        "long",
    ],
)
def test_bad_preprocessing_is_422_naming_the_options(
    api: httpx.Client, registered: dict[str, str], preprocessing: str | None
) -> None:
    data = {"name": "m", "architecture": "mlp", "num_classes": "3", "dataset_id": registered["dataset_id"]}
    if preprocessing is not None:
        data["preprocessing"] = preprocessing
    response = api.post("/v1/models", data=data, files={"weights": ("w.safetensors", mlp_weights(3))})
    body = assert_problem(response, 422, '"unit", "imagenet" or "dataset"')
    assert ["preprocessing"] in error_locs(body)


@pytest.mark.parametrize("kwargs", ["[1, 2]", "not json", "{" * 5000, '"text"'], ids=["list", "text", "deep", "str"])
def test_architecture_kwargs_not_an_object_is_422(api: httpx.Client, registered: dict[str, str], kwargs: str) -> None:
    response = api.post(
        "/v1/models",
        data={
            "name": "m",
            "architecture": "mlp",
            "num_classes": "3",
            "preprocessing": "unit",
            "dataset_id": registered["dataset_id"],
            "architecture_kwargs": kwargs,
        },
        files={"weights": ("w.safetensors", mlp_weights(3))},
    )
    assert ["architecture_kwargs"] in error_locs(assert_problem(response, 422, "JSON object"))


@pytest.mark.parametrize("path", ["/v1/datasets", "/v1/models"])
def test_a_truncated_multipart_body_is_a_400(service: Service, path: str) -> None:
    boundary = "cut-here"
    whole = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\nd\r\n--{boundary}\r\n'
        f'Content-Disposition: form-data; name="manifest"; filename="m.csv"\r\n'
        f"Content-Type: text/csv\r\n\r\nsample_id,split,shard,row\r\n--{boundary}--\r\n"
    ).encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    cut = service.client.post(path, content=whole[:-30], headers=headers)
    assert_problem(cut, 400, "truncated")
    complete = service.client.post(path, content=whole, headers=headers)
    assert complete.status_code == 422  # whole but incomplete as a form: the missing fields are named
