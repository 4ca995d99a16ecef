"""Building shards and a manifest from image folders and .npz files, read back as the API reads them."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from api.ingest import inspect_shard, parse_manifest
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


def test_an_image_folder_becomes_bounded_shards_with_relative_path_ids(tmp_path: Path) -> None:
    written = image_folder(tmp_path / "data")
    (tmp_path / "subjects.csv").write_text("sample_id,subject_id\ntrain/dog/1.png,alice\ntest/cat/0.png,bob\n")
    seen = []
    prepared = prepare_dataset(tmp_path / "data", tmp_path / "out", subjects_csv=tmp_path / "subjects.csv",
                               max_shard_bytes=3 * 30, on_progress=lambda done, total: seen.append((done, total)))
    assert prepared.classes == ["cat", "dog"] and prepared.describe_classes() == "classes: 0=cat, 1=dog"
    assert len(prepared.shards) == 6 and seen[-1] == (16, 16)  # 16 grey 6x5 images, 3 a shard
    rows, parsed = read_back(prepared)
    assert (parsed.num_train, parsed.num_test, parsed.num_classes, parsed.input_shape) == (8, 8, 2, (1, 5, 6))
    assert {r["sample_id"] for r in rows} == set(written)
    assert {r["sample_id"]: r["subject_id"] for r in rows if r["subject_id"]} == {"train/dog/1.png": "alice",
                                                                                  "test/cat/0.png": "bob"}
    from safetensors.numpy import load_file

    for row in rows:  # each row's pixels and label are the file's
        shard = load_file(tmp_path / "out" / row["shard"])
        assert np.array_equal(shard["inputs"][int(row["row"])][0], written[row["sample_id"]])
        assert shard["labels"][int(row["row"])] == ["cat", "dog"].index(row["sample_id"].split("/")[1])


def test_colour_images_are_rgb_and_sizes_must_agree_or_be_resized(tmp_path: Path) -> None:
    image_folder(tmp_path / "rgb", n=2, mode="RGB")
    Image.new("RGB", (9, 9)).save(tmp_path / "rgb" / "train" / "cat" / "odd.png")
    with pytest.raises(McuError, match="differ in size"):
        prepare_dataset(tmp_path / "rgb", tmp_path / "out")
    prepared = prepare_dataset(tmp_path / "rgb", tmp_path / "out2", size=(4, 4))
    assert read_back(prepared)[1].input_shape == (3, 4, 4)


def test_an_npz_in_any_layout_and_shards_with_their_manifest(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "d.npz", x_train=rng.integers(0, 256, (10, 7, 7, 3), dtype=np.uint8),
             y_train=np.arange(10) % 4, x_test=rng.integers(0, 256, (5, 7, 7, 3), dtype=np.uint8),
             y_test=np.arange(5) % 4)
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
    np.savez(tmp_path / "f.npz", x_train=x_train, y_train=np.arange(4) % 2,
             x_test=np.full((2, 1, 3, 3), 0.5, dtype=np.float32), y_test=np.arange(2) % 2)
    with pytest.raises(McuError, match=r"finite and in \[0, 1\]"):
        prepare_dataset(tmp_path / "f.npz", tmp_path / "out")
    x_train[2, 0, 1, 1] = 1.0  # in range: prepared, and the API's own checks accept the shards
    np.savez(tmp_path / "g.npz", x_train=x_train, y_train=np.arange(4) % 2,
             x_test=np.full((2, 1, 3, 3), 0.5, dtype=np.float32), y_test=np.arange(2) % 2)
    _, parsed = read_back(prepare_dataset(tmp_path / "g.npz", tmp_path / "out2"))
    assert parsed.input_dtype == "float32"
