"""Building shards and a manifest from image folders and .npz files, read back as the API reads them."""

from __future__ import annotations

import csv
import io
import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from api.ingest import inspect_shard
from api.manifest import parse_manifest
from mcu_client import McuError
from mcu_client.dataset_files import prepare_dataset


def image_folder(root: Path, n: int = 4, size: tuple[int, int] = (6, 5), mode: str = "L") -> dict[str, np.ndarray]:
    """train/<cat|dog>/i.png and test/<cat|dog>/i.jpg... as written; returns each file's pixels by relative path."""
    written = {}
    rng = np.random.default_rng(0)
    for split, suffix in (("train", ".png"), ("test", ".png")):
        for label in ("dog", "cat"):
            (root / split / label).mkdir(parents=True)
            for i in range(n):
                shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
                pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
                Image.fromarray(pixels, mode).save(root / split / label / f"{i}{suffix}")
                written[f"{split}/{label}/{i}{suffix}"] = pixels
    return written


def read_back(prepared: object) -> tuple[list[dict], dict]:
    """Parse the result with the API's own ingest code; returns (manifest rows, parsed dataset)."""
    infos = [inspect_shard(p.name, io.BytesIO(p.read_bytes())) for p in prepared.shards]  # type: ignore[attr-defined]
    with prepared.manifest.open("rb") as file:  # type: ignore[attr-defined]
        parsed = parse_manifest(file, infos, None)
    rows = list(csv.DictReader(prepared.manifest.open()))  # type: ignore[attr-defined]
    return rows, parsed


def encoded_rows(shard: Path) -> list[bytes]:
    from safetensors.numpy import load_file

    tensors = load_file(shard)
    offsets = tensors["offsets"].tolist()
    return [tensors["images"][a:b].tobytes() for a, b in itertools.pairwise(offsets)]


def test_an_image_folder_becomes_bounded_encoded_shards_with_relative_path_ids(tmp_path: Path) -> None:
    """The default: PNG / JPEG files' bytes as they are, other formats re-encoded as PNG, any size."""
    written = image_folder(tmp_path / "data")
    Image.fromarray(np.full((7, 3), 9, dtype=np.uint8)).save(tmp_path / "data/train/cat/wide.jpg", quality=90)
    Image.fromarray(np.full((2, 9), 200, dtype=np.uint8)).save(tmp_path / "data/test/dog/tall.bmp")
    Image.fromarray(np.full((3, 3), 0x8080, dtype=np.uint16)).save(tmp_path / "data/test/dog/deep.png")
    (tmp_path / "subjects.csv").write_text("sample_id,subject_id\ntrain/dog/1.png,alice\ntest/cat/0.png,bob\n")
    seen = []
    files = sorted((tmp_path / "data").rglob("*.*"))
    limit = 3 * (tmp_path / "data/train/dog/0.png").stat().st_size + 8  # noise PNGs: about 3 a shard
    prepared = prepare_dataset(
        tmp_path / "data",
        tmp_path / "out",
        subjects_csv=tmp_path / "subjects.csv",
        max_shard_bytes=limit,
        on_progress=lambda done, total: seen.append((done, total)),
    )
    assert prepared.classes == ["cat", "dog"] and prepared.describe_classes() == "classes: 0=cat, 1=dog"
    assert seen[-1] == (19, 19) and 6 <= len(prepared.shards) < 19
    rows, parsed = read_back(prepared)
    assert (parsed.num_train, parsed.num_test, parsed.num_classes) == (9, 10, 2)
    assert (parsed.input_shape, parsed.input_encoding, parsed.input_dtype) == ((1, None, None), "encoded", "uint8")
    assert {r["sample_id"] for r in rows} == {f.relative_to(tmp_path / "data").as_posix() for f in files}
    assert {r["sample_id"]: r["subject_id"] for r in rows if r["subject_id"]} == {
        "train/dog/1.png": "alice",
        "test/cat/0.png": "bob",
    }
    shards = {p.name: encoded_rows(p) for p in prepared.shards}
    assert all(sum(map(len, images)) <= limit or len(images) == 1 for images in shards.values())
    for row in rows:  # each row is the file: its bytes (PNG, JPEG) or its pixels (BMP, 16-bit PNG scaled)
        data, file = shards[row["shard"]][int(row["row"])], tmp_path / "data" / row["sample_id"]
        if file.name == "tall.bmp":
            assert data.startswith(b"\x89PNG") and np.array_equal(
                np.asarray(Image.open(io.BytesIO(data))), np.asarray(Image.open(file))
            )
        elif file.name == "deep.png":
            assert np.asarray(Image.open(io.BytesIO(data))).tolist() == [[128] * 3] * 3  # 0x8080 / 257
        else:
            assert data == file.read_bytes()
        if row["sample_id"] in written:
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), written[row["sample_id"]])


def test_a_size_decodes_into_pixel_shards_and_applies_to_image_folders_only(tmp_path: Path) -> None:
    image_folder(tmp_path / "rgb", n=2, mode="RGB")
    Image.new("RGB", (9, 9)).save(tmp_path / "rgb" / "train" / "cat" / "odd.png")
    _, parsed = read_back(prepare_dataset(tmp_path / "rgb", tmp_path / "out"))  # mixed sizes: fine, encoded
    assert (parsed.input_shape, parsed.input_encoding) == ((3, None, None), "encoded")
    prepared = prepare_dataset(tmp_path / "rgb", tmp_path / "out2", size=(4, 3), max_shard_bytes=3 * 36)
    _rows, parsed = read_back(prepared)
    assert (parsed.input_shape, parsed.input_encoding, len(prepared.shards)) == ((3, 3, 4), "tensor", 3)
    np.savez(
        tmp_path / "d.npz",
        x_train=np.zeros((2, 3, 3), np.uint8),
        y_train=[0, 1],
        x_test=np.zeros((2, 3, 3), np.uint8),
        y_test=[0, 1],
    )
    for source in (tmp_path / "d.npz", tmp_path / "out2"):  # never ignored
        with pytest.raises(McuError, match=r"size \(--size\)"):
            prepare_dataset(source, tmp_path / "out3", size=(4, 4))


def test_an_npz_in_any_layout_and_shards_with_their_manifest(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    np.savez(
        tmp_path / "d.npz",
        x_train=rng.integers(0, 256, (10, 7, 7, 3), dtype=np.uint8),
        y_train=np.arange(10) % 4,
        x_test=rng.integers(0, 256, (5, 7, 7, 3), dtype=np.uint8),
        y_test=np.arange(5) % 4,
    )
    prepared = prepare_dataset(tmp_path / "d.npz", tmp_path / "out")
    rows, parsed = read_back(prepared)
    assert (parsed.num_train, parsed.num_test, parsed.input_shape) == (10, 5, (3, 7, 7))
    assert rows[0]["sample_id"] == "train/0" and rows[-1]["sample_id"] == "test/4"
    again = prepare_dataset(tmp_path / "out", tmp_path / "unused")  # shards + manifest: used as they are
    assert again.manifest == tmp_path / "out" / "manifest.csv" and again.shards == prepared.shards
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((2, 3)), y_train=np.zeros(2))
    with pytest.raises(McuError, match="missing arrays"):
        prepare_dataset(tmp_path / "bad.npz", tmp_path / "out3")
    with pytest.raises(McuError, match="expected an image folder"):
        prepare_dataset(tmp_path, tmp_path / "out4")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 255.0, -0.5], ids=["nan", "inf", "255", "negative"])
def test_float_images_outside_0_1_are_refused_before_upload(tmp_path: Path, value: float) -> None:
    """The service refuses them (float inputs are taken as already in [0, 1]): say so before uploading."""
    x_train = np.full((4, 1, 3, 3), 0.5, dtype=np.float32)
    x_train[2, 0, 1, 1] = value
    np.savez(
        tmp_path / "f.npz",
        x_train=x_train,
        y_train=np.arange(4) % 2,
        x_test=np.full((2, 1, 3, 3), 0.5, dtype=np.float32),
        y_test=np.arange(2) % 2,
    )
    with pytest.raises(McuError, match=r"finite and in \[0, 1\]"):
        prepare_dataset(tmp_path / "f.npz", tmp_path / "out")
    x_train[2, 0, 1, 1] = 1.0  # in range: prepared, and the API's own checks accept the shards
    np.savez(
        tmp_path / "g.npz",
        x_train=x_train,
        y_train=np.arange(4) % 2,
        x_test=np.full((2, 1, 3, 3), 0.5, dtype=np.float32),
        y_test=np.arange(2) % 2,
    )
    _, parsed = read_back(prepare_dataset(tmp_path / "g.npz", tmp_path / "out2"))
    assert parsed.input_dtype == "float32"
