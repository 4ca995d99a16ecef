"""The strict input layer (domain/inputs.py), one table per class of hostile input, on both backends: each
payload is a 4xx problem+json (never a 500), nothing is stored (every list is unchanged), and the lists other
clients read still answer 200 afterwards.
"""

from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import Iterator
from typing import Annotated, Any, get_args, get_origin, get_type_hints

import httpx
import numpy as np
import pytest
from pydantic import AfterValidator, WrapValidator

from api import schemas
from domain import inputs
from storage import save_numpy

from .conftest import Service, assert_problem, manifest_bytes, mlp_weights, shard_bytes, simple_manifest
from .test_bad_input import no_5xx_client

LISTS = ("/v1/datasets", "/v1/models", "/v1/deletion-requests")


@pytest.fixture(scope="module")
def api(service: Service) -> Iterator[httpx.Client]:
    with no_5xx_client(service.url) as client:
        yield client


def listed(api: httpx.Client) -> dict[str, list[str]]:
    """Every list's ids, at the largest page size (500: docs/api.md's maximum must work) and the default one."""
    ids = {}
    for path in LISTS:
        default = api.get(path)
        assert default.status_code == 200, default.text
        largest = api.get(path, params={"page_size": 500})
        assert largest.status_code == 200, largest.text
        ids[path] = [item["id"] for item in largest.json()["items"]]
    return ids


@pytest.fixture
def refused(api: httpx.Client, registered: dict[str, str]) -> Iterator[None]:
    """The test's payload must leave every list as it was, and readable (200) by everyone."""
    before = listed(api)
    yield
    assert listed(api) == before


def assert_refused(response: httpx.Response, *statuses: int) -> dict:
    assert response.status_code in (statuses or (422,)), response.text
    return assert_problem(response, response.status_code)


def post_json(api: httpx.Client, path: str, body: dict[str, Any]) -> httpx.Response:
    # json.dumps escapes lone surrogates as \\udXXX (httpx's own encoder would fail on them client-side).
    return api.post(path, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"})


# --- text: single-line fields refuse every control character and lone surrogate -------------------------

BAD_LINES = {
    "NUL": "a\x00b",
    "lone high surrogate": "a\ud800b",
    "lone low surrogate": "\udfff",
    "escape": "a\x1b[31m",
    "C1 control": "a\x85b",
    "DEL": "a\x7fb",
    "CR LF header": "a\r\nX-Injected: 1",
    "tab": "a\tb",
    "newline": "a\n",
}
# Form fields arrive as bytes: a surrogate can only be sent CESU-8-encoded, which is not UTF-8 (decoded as
# Latin-1, it becomes a C1 control character).
BAD_FORM_TEXT = {name: text for name, text in BAD_LINES.items() if "surrogate" not in name} | {
    "CESU-8 surrogate bytes": b"a\xed\xa0\x80b"
}


def request_body(model_id: str, **changes: Any) -> dict[str, Any]:
    return {"model_id": model_id, "forget": {"sample_ids": ["s0", "s1"]}} | changes


REQUEST_TEXT_FIELDS = {
    "sample_ids": lambda m, bad: request_body(m, forget={"sample_ids": ["s0", bad]}),
    "subject_ids": lambda m, bad: request_body(m, forget={"subject_ids": ["subject1", bad]}),
    "model_id": lambda m, bad: request_body(bad),
    "base_method": lambda m, bad: request_body(m, base_method=bad),
    "external_id": lambda m, bad: request_body(m, external_id=bad),
    "config key": lambda m, bad: request_body(m, config={bad: 1}),
    "config nested key": lambda m, bad: request_body(m, config={"mask": {bad: 0.5}}),
    "config value": lambda m, bad: request_body(m, config={"beta": bad}),
}


@pytest.mark.parametrize("bad", BAD_LINES)
@pytest.mark.parametrize("field", REQUEST_TEXT_FIELDS)
def test_bad_text_in_a_deletion_request_is_422(
    api: httpx.Client, registered: dict[str, str], refused: None, field: str, bad: str
) -> None:
    body = REQUEST_TEXT_FIELDS[field](registered["model_id"], BAD_LINES[bad])
    assert_refused(post_json(api, "/v1/deletion-requests", body))


@pytest.mark.parametrize("bad", BAD_FORM_TEXT)
@pytest.mark.parametrize("field", ["name", "architecture", "dataset_id"])
def test_bad_text_in_a_model_form_is_422(
    api: httpx.Client, registered: dict[str, str], refused: None, field: str, bad: str
) -> None:
    data = {
        "name": "m",
        "architecture": "mlp",
        "num_classes": "3",
        "dataset_id": registered["dataset_id"],
        "preprocessing": "unit",
        field: BAD_FORM_TEXT[bad],
    }
    body = assert_refused(api.post("/v1/models", data=data, files={"weights": ("w.safetensors", mlp_weights(3))}))
    assert [field] in [e["loc"] for e in body["errors"]]


DATASET_TEXT = {  # the name is one line; a description may hold tabs and line breaks, nothing else
    "name": {f"name {bad}": {"name": text} for bad, text in BAD_FORM_TEXT.items()},
    "description": {
        f"description {bad}": {"description": text}
        for bad, text in BAD_FORM_TEXT.items()
        if bad not in ("tab", "newline", "CR LF header")
    },
}


@pytest.mark.parametrize("case", [case for table in DATASET_TEXT.values() for case in table])
def test_bad_text_in_a_dataset_form_is_422(api: httpx.Client, refused: None, case: str) -> None:
    form = next(table[case] for table in DATASET_TEXT.values() if case in table)
    response = api.post(
        "/v1/datasets",
        data={"name": "d", **form},
        files=[("manifest", ("m.csv", simple_manifest(4, 2))), ("shards", ("a.safetensors", shard_bytes(6)))],
    )
    assert_refused(response)


def test_a_description_may_span_lines(api: httpx.Client) -> None:
    response = api.post(
        "/v1/datasets",
        data={"name": "prose", "description": "line one\r\n\tline two\n"},
        files=[
            ("manifest", ("m.csv", simple_manifest(4, 2, prefix="prose"))),
            ("shards", ("a.safetensors", shard_bytes(6))),
        ],
    )
    assert response.status_code == 201, response.text
    assert response.json()["description"] == "line one\r\n\tline two\n"


@pytest.mark.parametrize(
    "bad", ["a\x00.safetensors", "a\x1b.safetensors", "a\x85.safetensors"], ids=["NUL", "escape", "C1"]
)
def test_bad_text_in_a_shard_file_name_is_422(api: httpx.Client, refused: None, bad: str) -> None:
    manifest = manifest_bytes([(f"f{i}", "train" if i < 4 else "test", bad, i, None) for i in range(6)])
    response = api.post(
        "/v1/datasets", data={"name": "d"}, files=[("manifest", ("m.csv", manifest)), ("shards", (bad, shard_bytes(6)))]
    )
    assert_refused(response, 400, 422)  # 400: a name the multipart parser itself cannot read


@pytest.mark.parametrize("bad", ["x\x1b", "x\x85", "x\x01y", "x\x9f"], ids=["escape", "C1", "SOH", "APC"])
@pytest.mark.parametrize("column", ["sample_id", "subject_id"])
def test_bad_text_in_the_manifest_names_the_line(api: httpx.Client, refused: None, column: str, bad: str) -> None:
    rows = [
        ("m0", "train", "a.safetensors", 0, None),
        ("m1", "train", "a.safetensors", 1, None),
        ("m2", "test", "a.safetensors", 2, None),
    ]
    rows[1] = (bad, *rows[1][1:]) if column == "sample_id" else (*rows[1][:4], bad)
    response = api.post(
        "/v1/datasets",
        data={"name": "d"},
        files=[("manifest", ("m.csv", manifest_bytes(rows))), ("shards", ("a.safetensors", shard_bytes(3)))],
    )
    body = assert_refused(response)
    assert ["manifest", "line 3"] in [e["loc"] for e in body["errors"]]


# --- callback URLs: no whitespace or control character (header injection) -------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook\r\nX-Injected: 1",
        "http://127.0.0.1:9/hook\nX-Injected: 1",
        "http://127.0.0.1:9/a\tb",
        "http://127.0.0.1:9/a b",
        "http://127.0.0.1:9/hook\r\n",
        " http://127.0.0.1:9/hook",
        "http://127.0.0.1:9/\x00",
        "http://127.0.0.1:9/\ud800",
        "http://127.0.0.1:9/\x85",
        "http://127.0.0.1:9/\u3000",
    ],
    ids=[
        "crlf-header",
        "lf-header",
        "tab",
        "space",
        "trailing-crlf",
        "leading-space",
        "nul",
        "surrogate",
        "nel",
        "ideographic-space",
    ],
)
def test_callback_url_with_whitespace_or_controls_is_422(
    service: Service,
    api: httpx.Client,
    registered: dict[str, str],
    refused: None,
    monkeypatch: pytest.MonkeyPatch,
    url: str,
) -> None:
    # The host is allow-listed (urlsplit drops CR, LF and tab, so the allow-list alone would pass these URLs):
    # only the strict layer stands between them and a stored callback.
    monkeypatch.setattr(service.settings, "callback_allowed_hosts", ["127.0.0.1:*"])
    body = assert_refused(
        post_json(api, "/v1/deletion-requests", request_body(registered["model_id"], callback_url=url))
    )
    assert ["callback_url"] in [e["loc"] for e in body["errors"]] and "contains" in body["detail"], body


# --- numbers: finite, bounded, integers written as integers ---------------------------------------------

BIG = "1" + "0" * 4000  # 10^4000: more digits than Python converts

RAW_CONFIG_NUMBERS = {  # written into the JSON text as they are
    "lr NaN": '{"lr": NaN}',
    "lr Infinity": '{"lr": Infinity}',
    "lr -Infinity": '{"lr": -Infinity}',
    "lr 1e400": '{"lr": 1e400}',
    "lr 1e308": '{"lr": 1e308}',
    "lr 11": '{"lr": 11}',
    "weight_decay 1e300": '{"base": {"weight_decay": 1e300}}',
    "grad_clip 1e30": '{"guard": {"grad_clip": 1e30}}',
    "beta 1e200": '{"beta": 1e200}',
    "seed 2^64": '{"seed": 18446744073709551616}',
    "unknown key 10^4000": '{"x": ' + BIG + "}",
    "unknown key 10^30": '{"x": 1000000000000000000000000000000}',
    "epochs 10^4000": '{"epochs": ' + BIG + "}",
}


@pytest.mark.parametrize("case", RAW_CONFIG_NUMBERS)
def test_bad_config_numbers_are_4xx(api: httpx.Client, registered: dict[str, str], refused: None, case: str) -> None:
    start = json.dumps({"model_id": registered["model_id"], "forget": {"sample_ids": ["s0"]}})[:-1]
    content = f'{start}, "config": {RAW_CONFIG_NUMBERS[case]}}}'.encode()
    response = api.post("/v1/deletion-requests", content=content, headers={"Content-Type": "application/json"})
    assert_refused(response, 400, 422)  # 400: Python's JSON parser itself refuses a number of 4,300+ digits


@pytest.mark.parametrize("content", [b'{"t": 1e400}', b'{"t": ' + BIG.encode() + b"}"], ids=["1e400", "10^4000"])
def test_selection_with_huge_t_is_4xx(api: httpx.Client, registered: dict[str, str], content: bytes) -> None:
    response = api.post(
        "/v1/deletion-requests/req_nope/selection", content=content, headers={"Content-Type": "application/json"}
    )
    assert_refused(response, 400, 422)


KWARGS = {
    "surrogate value": '{"a": "\\ud800"}',
    "surrogate key": '{"\\udc00": 1}',
    "NUL value": '{"a": "x\\u0000"}',
    "escape in nested list": '{"a": [["\\u001b"]]}',
    "NaN": '{"a": NaN}',
    "Infinity": '{"a": Infinity}',
    "-Infinity": '{"a": -Infinity}',
    "1e400": '{"a": 1e400}',
    "10^4000": '{"a": ' + BIG + "}",
    "10^30": '{"a": 1000000000000000000000000000000}',
    "1e30": '{"a": 1e30}',
    "nested 40 deep": '{"a": ' + "[" * 40 + "]" * 40 + "}",
}


@pytest.mark.parametrize("case", KWARGS)
def test_bad_architecture_kwargs_are_422(
    api: httpx.Client, registered: dict[str, str], refused: None, case: str
) -> None:
    data = {
        "name": "m",
        "architecture": "mlp",
        "num_classes": "3",
        "dataset_id": registered["dataset_id"],
        "preprocessing": "unit",
        "architecture_kwargs": KWARGS[case],
    }
    body = assert_refused(api.post("/v1/models", data=data, files={"weights": ("w.safetensors", mlp_weights(3))}))
    assert ["architecture_kwargs"] in [e["loc"] for e in body["errors"]]


PREPROCESSING = {
    "std 5e-324": '{"mean": [0.5], "std": [5e-324]}',
    "std 1e-9": '{"mean": [0.5], "std": [1e-9]}',
    "mean 1e308": '{"mean": [1e308], "std": [1]}',
    "mean 1e4": '{"mean": [10000], "std": [1]}',
    "std Infinity": '{"mean": [0.5], "std": [Infinity]}',
    "mean -Infinity": '{"mean": [-Infinity], "std": [1]}',
    "mean 10^4000": '{"mean": [' + BIG + '], "std": [1]}',
    "std 1e400": '{"mean": [0], "std": [1e400]}',
}


@pytest.mark.parametrize("case", PREPROCESSING)
def test_unbounded_preprocessing_is_422(
    api: httpx.Client, registered: dict[str, str], refused: None, case: str
) -> None:
    data = {
        "name": "m",
        "architecture": "mlp",
        "num_classes": "3",
        "dataset_id": registered["dataset_id"],
        "preprocessing": PREPROCESSING[case],
    }
    body = assert_refused(api.post("/v1/models", data=data, files={"weights": ("w.safetensors", mlp_weights(3))}))
    assert ["preprocessing"] in [e["loc"] for e in body["errors"]]


NOT_INTEGERS = ["10.0", "3.0", "1e1", "3e0", " 3", "3 ", "0x3", "3_0", "+3", "٣"]


@pytest.mark.parametrize("value", NOT_INTEGERS)
@pytest.mark.parametrize("form", ["model", "dataset"])
def test_integer_form_fields_take_digits_only(
    api: httpx.Client, registered: dict[str, str], refused: None, form: str, value: str
) -> None:
    if form == "model":
        response = api.post(
            "/v1/models",
            files={"weights": ("w.safetensors", mlp_weights(3))},
            data={
                "name": "m",
                "architecture": "mlp",
                "num_classes": value,
                "dataset_id": registered["dataset_id"],
                "preprocessing": "unit",
            },
        )
    else:
        response = api.post(
            "/v1/datasets",
            data={"name": "d", "num_classes": value},
            files=[("manifest", ("m.csv", simple_manifest(4, 2))), ("shards", ("a.safetensors", shard_bytes(6)))],
        )
    assert ["num_classes"] in [e["loc"] for e in assert_refused(response)["errors"]]


def float_shard(value: float, row: int = 4) -> bytes:
    inputs = np.full((6, 1, 4, 4), 0.5, dtype=np.float32)
    inputs[row, 0, 2, 1] = value
    return save_numpy({"inputs": inputs, "labels": (np.arange(6) % 3).astype(np.int64)})


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), float("-inf"), 1e30, -1e-3, 1.0001, 255.0],
    ids=["nan", "inf", "-inf", "1e30", "negative", "above-1", "255"],
)
def test_float_pixels_must_be_finite_and_in_0_1(api: httpx.Client, refused: None, value: float) -> None:
    response = api.post(
        "/v1/datasets",
        data={"name": "floats"},
        files=[("manifest", ("m.csv", simple_manifest(4, 2))), ("shards", ("a.safetensors", float_shard(value)))],
    )
    assert_problem(response, 422, "in [0, 1]", "row 4")


def test_float_pixels_in_0_1_are_accepted(api: httpx.Client) -> None:
    response = api.post(
        "/v1/datasets",
        data={"name": "floats"},
        files=[
            ("manifest", ("m.csv", simple_manifest(4, 2, prefix="unit"))),
            ("shards", ("a.safetensors", float_shard(1.0))),
        ],
    )
    assert response.status_code == 201, response.text


# --- safetensors headers: digits, constants, size and tensor count bounded ------------------------------


def header_file(header: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header)) + header + data


def empty_tensors(count: int) -> bytes:
    return header_file(
        b"{" + b",".join(b'"t%d":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}' % i for i in range(count)) + b"}"
    )


HEADERS = {
    "offset of 5,000 digits": header_file(
        b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 1' + b"0" * 5000 + b"]}}", b"\0" * 4
    ),
    "dimension of 5,000 digits": header_file(
        b'{"w": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 4]}}', b"\0" * 4
    ),
    "NaN dimension": header_file(b'{"w": {"dtype": "F32", "shape": [NaN], "data_offsets": [0, 4]}}', b"\0" * 4),
    "surrogate tensor name": header_file(
        b'{"\\ud800": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', b"\0" * 4
    ),
    "150,000 empty tensors": lambda: empty_tensors(150_000),  # within the header size limit
    "a million empty tensors (56 MB)": lambda: empty_tensors(1_000_000),
}


@pytest.mark.parametrize("case", HEADERS)
@pytest.mark.parametrize("upload", ["weights", "shard"])
def test_crafted_safetensors_headers_are_422_quickly(
    api: httpx.Client, registered: dict[str, str], refused: None, upload: str, case: str
) -> None:
    crafted = HEADERS[case]
    crafted = crafted() if callable(crafted) else crafted
    started = time.perf_counter()
    if upload == "weights":
        response = api.post(
            "/v1/models",
            files={"weights": ("w.safetensors", crafted)},
            data={
                "name": "m",
                "architecture": "mlp",
                "num_classes": "3",
                "dataset_id": registered["dataset_id"],
                "preprocessing": "unit",
            },
        )
    else:
        response = api.post(
            "/v1/datasets",
            data={"name": "d"},
            files=[("manifest", ("m.csv", simple_manifest(4, 2))), ("shards", ("a.safetensors", crafted))],
        )
    seconds = time.perf_counter() - started
    assert_problem(response, 422, "safetensors")
    assert seconds < 5, f"{case}: {seconds:.1f} s"


# --- page tokens: the decoded JSON is held to the same rules --------------------------------------------


def token(data: Any) -> str:
    text = json.dumps(data) if not isinstance(data, str) else data
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


TOKENS = {
    "surrogate id": {"c": "2020-01-01T00:00:00+00:00", "i": "\ud800"},
    "NUL id": {"c": "2020-01-01T00:00:00+00:00", "i": "\x00"},
    "escape id": {"c": "2020-01-01T00:00:00+00:00", "i": "a\x1b"},
    "surrogate time": {"c": "2020-01-01T00:00:00\ud800", "i": "x"},
    "key 10^4000": '{"k": ' + BIG + ', "c": "2020-01-01T00:00:00", "i": "x"}',
    "key NaN": '{"k": NaN, "c": NaN, "i": NaN}',
    "key 10^30": {"k": 10**30, "c": "2020-01-01T00:00:00", "i": "x"},
    "nested": {"c": [[[[[[[[[[[[[[[[[[["x"]]]]]]]]]]]]]]]]]]], "i": "x", "k": 1},
}


@pytest.mark.parametrize("case", TOKENS)
@pytest.mark.parametrize("path", [*LISTS, "/v1/models/{model_id}/versions"])
def test_forged_page_tokens_are_422(api: httpx.Client, registered: dict[str, str], path: str, case: str) -> None:
    response = api.get(path.format(model_id=registered["model_id"]), params={"page_token": token(TOKENS[case])})
    assert_problem(response, 422, "page_token")


@pytest.mark.parametrize("size", ["500.0", "5e2", "50 ", "0x10", "1" + "0" * 5000])
@pytest.mark.parametrize("path", LISTS)
def test_page_size_is_written_in_digits(api: httpx.Client, path: str, size: str) -> None:
    assert_problem(api.get(path, params={"page_size": size}), 422, "page_size")


def test_nul_in_a_query_filter_is_422(api: httpx.Client) -> None:
    assert_refused(api.get("/v1/deletion-requests", params={"model_id": "mdl\x00"}))


# --- free text in follow-up bodies ----------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["no\x00", "esc\x1b", "sur\ud800", "c1\x85"], ids=["NUL", "escape", "surrogate", "C1"])
@pytest.mark.parametrize(("action", "field"), [("extension", "reason"), ("selection", "acknowledge")])
def test_bad_text_in_reasons_is_422(api: httpx.Client, action: str, field: str, bad: str) -> None:
    body = {"days": 5, "reason": bad} if field == "reason" else {"t": 0.5, "acknowledge": bad}
    response = post_json(api, f"/v1/deletion-requests/req_nope/{action}", body)
    assert [field] in [e["loc"] for e in assert_refused(response)["errors"]]  # refused before the 404


def test_a_reason_may_span_lines(api: httpx.Client) -> None:
    response = post_json(api, "/v1/deletion-requests/req_nope/extension", {"days": 5, "reason": "a\r\n\tb"})
    assert_problem(response, 404)  # the body passed; the request does not exist


# --- rows stored before these checks still serve -------------------------------------------------------


def test_a_legacy_row_with_a_surrogate_does_not_break_the_lists(
    service: Service, api: httpx.Client, registered: dict[str, str]
) -> None:
    from sqlalchemy import update

    from models import Model
    from worker.services import connect

    factory = connect(service.settings).factory
    model_id = registered["model_id"]
    with factory() as session:
        before = session.get(Model, model_id).architecture_kwargs
        session.execute(update(Model).where(Model.id == model_id).values(architecture_kwargs={"a": "x\ud800"}))
        try:
            session.commit()
        except Exception:  # noqa: BLE001  (Postgres refuses to store it: the class cannot occur there)
            pytest.skip(f"{service.name} does not store lone surrogates")
    try:
        one = api.get(f"/v1/models/{model_id}")
        assert one.status_code == 200 and one.json()["architecture_kwargs"] == {"a": "x\ufffd"}
        listed(api)
    finally:
        with factory() as session:
            session.execute(update(Model).where(Model.id == model_id).values(architecture_kwargs=before))
            session.commit()


# --- the layer covers every field of every request body -------------------------------------------------

CHECKS = {inputs.check_line, inputs.check_prose, inputs.check_url, inputs._json_object, inputs._check_lines}


def unchecked_text(annotation: Any, checked: bool = False) -> bool:
    """Whether a str (or a free-form value) is reachable in `annotation` without one of the layer's checks."""
    if get_origin(annotation) is Annotated:
        checked = checked or any(
            isinstance(m, AfterValidator | WrapValidator) and m.func in CHECKS for m in annotation.__metadata__
        )
        return unchecked_text(get_args(annotation)[0], checked)
    if annotation is str or annotation is Any:
        return not checked
    return any(unchecked_text(arg, checked) for arg in get_args(annotation) if not isinstance(arg, str))


def test_every_request_body_field_goes_through_the_strict_layer() -> None:
    bodies = [
        cls
        for cls in vars(schemas).values()
        if isinstance(cls, type) and issubclass(cls, schemas.Strict) and cls is not schemas.Strict
    ]
    assert len(bodies) >= 4
    for cls in bodies:
        assert cls.model_config.get("allow_inf_nan") is False, cls
        for name, annotation in get_type_hints(cls, include_extras=True).items():
            assert not unchecked_text(annotation), f"{cls.__name__}.{name} takes text the strict layer never checks"
