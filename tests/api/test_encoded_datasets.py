"""Datasets whose images stay encoded (PNG / JPEG, any size): accepted with their channels read from the
headers, and refused with a 422 naming the shard and the row when a row is not an image the worker can
decode within the bounds (bad offsets, other bytes, decompression bombs, 16-bit or lossless coding), or when
shards mix the two formats. On the embedded default (SQLite, a local folder), through the real app.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.app import create_app
from domain.images import MAX_IMAGE_BYTES, MAX_PIXELS
from settings import Settings
from storage import save_numpy

from .conftest import manifest_bytes, shard_bytes


def png(width: int, height: int, mode: str = "L", seed: int = 0, **options: object) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(out, "PNG", **options)
    return out.getvalue()


def jpeg(width: int, height: int, mode: str = "RGB", **options: object) -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height), "white" if mode == "RGB" else 200).save(out, "JPEG", **options)
    return out.getvalue()


def encoded_shard(images: list[bytes], offsets: list[int] | None = None, **extra: np.ndarray) -> bytes:
    lengths = [len(i) for i in images]
    return save_numpy(
        {
            "images": np.frombuffer(b"".join(images), dtype=np.uint8),
            "offsets": np.array(offsets if offsets is not None else [0, *np.cumsum(lengths)], np.int64),
            "labels": (np.arange(len(images)) % 2).astype(np.int64),
            **extra,
        }
    )


def grey_images(n: int = 6) -> list[bytes]:
    """Mixed sizes and formats, every one grey."""
    return [png(5 + i, 4 + 2 * i, seed=i) if i % 2 else jpeg(7 + i, 3 + i, "L") for i in range(n)]


def files(shards: dict[str, bytes], rows: int = 6) -> list[tuple[str, tuple[str, bytes]]]:
    names = list(shards)
    manifest = manifest_bytes(
        [(f"{name}-{r}", "train" if r < rows - 2 else "test", name, r, None) for name in names for r in range(rows)]
    )
    return [("manifest", ("manifest.csv", manifest)), *(("shards", (n, b)) for n, b in shards.items())]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("encoded"),
        bootstrap_api_key="k",
        rate_limit_per_address="off",
        rate_limit_per_key="off",
    )
    with TestClient(create_app(settings), headers={"Authorization": "Bearer k"}) as c:
        yield c


def test_encoded_shards_are_registered_with_their_channels_read_from_the_headers(client: TestClient) -> None:
    grey = client.post(
        "/v1/datasets",
        data={"name": "grey"},
        files=files(
            {"a.safetensors": encoded_shard(grey_images()), "b.safetensors": encoded_shard(grey_images()[::-1])}
        ),
    )
    assert grey.status_code == 201, grey.text
    shown = client.get(f"/v1/datasets/{grey.json()['id']}").json()
    assert (shown["input_encoding"], shown["input_shape"], shown["num_train"]) == ("encoded", [1, None, None], 8)
    # One colour image anywhere (a palette PNG here) and every image is decoded as RGB.
    colour = grey_images()
    colour[3] = png(4, 4, "P")
    mixed = client.post(
        "/v1/datasets",
        data={"name": "colour"},
        files=files({"a.safetensors": encoded_shard(grey_images()), "b.safetensors": encoded_shard(colour)}),
    )
    assert mixed.status_code == 201, mixed.text
    assert (mixed.json()["input_encoding"], mixed.json()["input_shape"]) == ("encoded", [3, None, None])
    rgb = client.post(
        "/v1/datasets",
        data={"name": "rgb"},
        files=files(
            {
                "a.safetensors": encoded_shard(
                    [
                        png(3, 3, "RGB"),
                        png(4, 2, "LA"),
                        jpeg(9, 9, progressive=True),
                        jpeg(2, 5, "CMYK"),
                        png(1, 1),
                        png(2, 2),
                    ]
                )
            }
        ),
    )
    assert rgb.status_code == 201 and rgb.json()["input_shape"] == [3, None, None], rgb.text
    tensor = client.post("/v1/datasets", data={"name": "pixels"}, files=files({"a.safetensors": shard_bytes(6)}))
    assert (tensor.json()["input_encoding"], tensor.json()["input_shape"]) == ("tensor", [1, 4, 4])


def with_header(data: bytes, at: int, value: bytes) -> bytes:
    return data[:at] + value + data[at + len(value) :]


def jpeg_sof(data: bytes) -> int:
    """Where the frame header's marker is in a JPEG made by Pillow."""
    return min(data.find(marker) for marker in (b"\xff\xc0", b"\xff\xc2") if marker in data)


BOMB_PNG = with_header(png(2, 2), 16, (10_000).to_bytes(4, "big") * 2)  # IHDR says 10,000 x 10,000
BOMB_JPEG = with_header(jpeg(2, 2), jpeg_sof(jpeg(2, 2)) + 5, b"\xff\xff\xff\xff")  # 65,535 x 65,535
LOSSLESS_JPEG = with_header(jpeg(2, 2), jpeg_sof(jpeg(2, 2)), b"\xff\xc3")
DEEP_PNG = with_header(png(3, 3), 24, b"\x10")  # IHDR says 16 bits a sample
IMAGES = grey_images()
ENDS = np.cumsum([len(i) for i in IMAGES]).tolist()  # where each row ends
CASES = {
    "text, not an image": ([*IMAGES[:2], b"hello, not an image" * 3, *IMAGES[3:]], None, "row 2: not a PNG or JPEG"),
    "empty row": (IMAGES, [0, 0, *ENDS[1:]], "row 0: not a PNG or JPEG"),
    "PNG bomb": (
        [*IMAGES[:4], BOMB_PNG, *IMAGES[5:]],
        None,
        f"row 4: a PNG of 10000x10000 pixels is over the {MAX_PIXELS:,}",
    ),
    "JPEG bomb": ([BOMB_JPEG, *IMAGES[1:]], None, "row 0: a JPEG of 65535x65535 pixels"),
    "16-bit PNG": ([*IMAGES[:1], DEEP_PNG, *IMAGES[2:]], None, "row 1: a PNG of colour type 0 and bit depth 16"),
    "lossless JPEG": ([*IMAGES[:5], LOSSLESS_JPEG], None, "row 5: a JPEG coded with SOF3"),
    "first offset": (IMAGES, [3, *ENDS], "offsets[0] must be 0"),
    "decreasing": (IMAGES, [0, ENDS[1], ENDS[0], *ENDS[2:]], f"row 1: offsets {ENDS[1]}..{ENDS[0]} must be"),
    "short of the end": (IMAGES, [0, *ENDS[:-1], ENDS[-1] - 1], f"offsets[6] must be the {ENDS[-1]} bytes"),
    "beyond the end": (IMAGES, [0, *ENDS[:-1], ENDS[-1] + 1], f"row 5: offsets {ENDS[4]}..{ENDS[5] + 1}"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_row_that_is_not_an_accepted_image_is_a_422_naming_shard_and_row(client: TestClient, case: str) -> None:
    images, offsets, message = CASES[case]
    response = client.post(
        "/v1/datasets",
        data={"name": case},
        files=files({"good.safetensors": encoded_shard(IMAGES), "bad.safetensors": encoded_shard(images, offsets)}),
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["detail"].startswith("shard 'bad.safetensors': ") and message in body["detail"], body
    assert body["errors"][0]["loc"] == ["shards", "bad.safetensors"] and message in body["errors"][0]["msg"]


def test_an_image_over_the_byte_bound_is_refused_before_it_is_read(client: TestClient) -> None:
    huge = png(2, 2) + bytes(MAX_IMAGE_BYTES)
    response = client.post(
        "/v1/datasets", data={"name": "huge"}, files=files({"a.safetensors": encoded_shard([*IMAGES[:5], huge])})
    )
    assert response.status_code == 422 and "row 5: " in response.json()["detail"]
    assert "an image may hold at most 32 MiB" in response.json()["detail"]


def test_shards_of_both_formats_or_a_malformed_encoded_shard_are_refused(client: TestClient) -> None:
    mixed = client.post(
        "/v1/datasets",
        data={"name": "mixed"},
        files=files(
            {
                "pixels.safetensors": shard_bytes(6),
                "png.safetensors": encoded_shard(IMAGES),
                "png2.safetensors": encoded_shard(IMAGES),
            }
        ),
    )
    assert mixed.status_code == 422 and "mix the tensor and the encoded format" in mixed.json()["detail"]
    assert [e["loc"] for e in mixed.json()["errors"]] == [["shards", "png.safetensors"], ["shards", "png2.safetensors"]]
    for shard, message in [
        (encoded_shard(IMAGES, extra=np.zeros(6, np.int64)), "'images', 'offsets' and 'labels' only, not ['extra']"),
        (encoded_shard(IMAGES, [0, 5]), "'offsets' must have one entry more than 'labels' has rows (6), got 2"),
        (
            save_numpy(
                {
                    "images": np.zeros((2, 3), np.uint8),
                    "offsets": np.zeros(7, np.int64),
                    "labels": np.zeros(6, np.int64),
                }
            ),
            "'images' must be U8 of rank 1",
        ),
    ]:
        response = client.post("/v1/datasets", data={"name": "malformed"}, files=files({"a.safetensors": shard}))
        assert response.status_code == 422 and message in response.json()["detail"], response.text
