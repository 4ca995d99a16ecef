"""Turning a user's data into what `POST /v1/datasets` takes: safetensors shards plus a manifest CSV.

`prepare_dataset(path, out_dir)` accepts
- an ImageFolder tree: `train/<class>/*.png|jpg|...` and `test/<class>/*` (sample ids are the relative paths,
  labels the sorted class folder names' indices). By default its images stay encoded, of any size: a PNG or
  JPEG file's bytes are stored as they are, other formats (BMP, GIF, WebP, TIFF) re-encoded as PNG (lossless;
  16-bit grey scaled to 8 bits). With `size` (W, H) they are decoded with Pillow instead, resized (bilinear)
  and stored as pixels, grey when every image is;
- a `.npz` file with `x_train`, `y_train`, `x_test`, `y_test` (images [N, H, W], [N, H, W, C] or [N, C, H, W],
  uint8 or floats in [0, 1]; sample ids `train/<row>`, `test/<row>`);
- a folder that already holds `manifest.csv` and its `*.safetensors` shards (used as they are).
Shards are written one at a time and hold at most `max_shard_bytes` of inputs (pixels, or encoded bytes), so
memory stays bounded however large the folder; subject ids may come from a CSV with columns
`sample_id,subject_id`. An option that does not apply to the input is an error, never ignored.
The shard formats are described in docs/datasets.md.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mcu_client.errors import McuError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N"}
WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}  # 16-bit grey (Pillow opens some as 32-bit "I")
KEPT_FORMATS = {"PNG", "JPEG"}  # stored as the file's bytes; the service refuses 16-bit PNG (scaled here)
MAX_SHARD_BYTES = 64 << 20
Progress = Callable[[int, int], None]  # (samples done, samples in all)


@dataclass
class PreparedDataset:
    manifest: Path
    shards: list[Path]
    classes: list[str] = field(default_factory=list)  # class names by label, when the source names them

    def describe_classes(self) -> str | None:
        return "classes: " + ", ".join(f"{i}={name}" for i, name in enumerate(self.classes)) if self.classes else None


def prepare_dataset(
    path: str | Path,
    out_dir: str | Path,
    *,
    subjects_csv: str | Path | None = None,
    max_shard_bytes: int = MAX_SHARD_BYTES,
    size: tuple[int, int] | None = None,
    on_progress: Progress | None = None,
) -> PreparedDataset:
    """Shards and a manifest for `path` under `out_dir` (or `path`'s own files when it already has them)."""
    path, out_dir = Path(path), Path(out_dir)
    subjects = read_subjects(Path(subjects_csv)) if subjects_csv else {}
    folder = path.is_dir() and (path / "train").is_dir() and (path / "test").is_dir()
    if size is not None and (not folder or (path / "manifest.csv").is_file()):
        raise McuError(
            f"size (--size) decodes and resizes the images of an image folder; {path} is "
            f"{'a folder with its own manifest.csv and shards' if path.is_dir() else 'not one'}"
        )
    if path.is_dir() and (path / "manifest.csv").is_file():
        if subjects:
            raise McuError("a folder with its own manifest.csv names its subjects there (column subject_id)")
        shards = sorted(path.glob("*.safetensors"))
        if not shards:
            raise McuError(f"{path} has manifest.csv but no *.safetensors shards")
        return PreparedDataset(path / "manifest.csv", shards)
    if path.is_file() and path.suffix == ".npz":
        samples = _npz_samples(path)
    elif folder:
        samples = _folder_samples(path, size)
    else:
        raise McuError(
            f"{path}: expected an image folder (train/<class>/*, test/<class>/*), a .npz file with "
            "x_train, y_train, x_test, y_test, or a folder with manifest.csv and *.safetensors shards"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    return _write(samples, out_dir, subjects, max_shard_bytes, on_progress)


def read_subjects(path: Path) -> dict[str, str]:
    with path.open(newline="", encoding="utf-8-sig") as file:
        reader = csv.DictReader(file)
        if not {"sample_id", "subject_id"} <= set(reader.fieldnames or []):
            raise McuError(f"{path}: the subjects CSV needs the columns sample_id,subject_id")
        return {row["sample_id"]: row["subject_id"] for row in reader if row["subject_id"]}


@dataclass
class _Samples:
    """Every sample's (id, split, label) and a way to read its image: as uint8/float32 [C, H, W], or `encoded`,
    as the bytes of a PNG / JPEG file (uint8 [length])."""

    items: list[tuple[str, str, int]]
    load: Callable[[int], np.ndarray]
    classes: list[str]
    encoded: bool = False


def _folder_samples(root: Path, size: tuple[int, int] | None) -> _Samples:
    from PIL import Image

    splits = {split: sorted(d.name for d in (root / split).iterdir() if d.is_dir()) for split in ("train", "test")}
    classes = sorted(set(splits["train"]) | set(splits["test"]))
    files: list[Path] = []
    items: list[tuple[str, str, int]] = []
    for split in ("train", "test"):
        for label, name in enumerate(classes):
            folder = root / split / name
            if folder.is_dir():
                for file in sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES):
                    files.append(file)
                    items.append((file.relative_to(root).as_posix(), split, label))
    if not files:
        raise McuError(f"{root}: no images under train/<class>/ and test/<class>/")
    if size is None:
        return _Samples(items, lambda index: _encoded(files[index]), classes, encoded=True)
    grey = True
    for file in files:  # headers only: Pillow opens lazily
        with Image.open(file) as image:
            grey = grey and image.mode in GREY_MODES
    mode = "L" if grey else "RGB"

    def load(index: int) -> np.ndarray:
        with Image.open(files[index]) as image:
            image = _eight_bit(image).convert(mode)
            if image.size != size:
                image = image.resize(size, Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.uint8)
        return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)

    return _Samples(items, load, classes)


def _encoded(file: Path) -> np.ndarray:
    """The file's bytes when the service takes them as they are (8-bit PNG, JPEG); otherwise its (first) image
    re-encoded as PNG, which is lossless."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            if image.format in KEPT_FORMATS and image.mode not in WIDE_MODES:
                return np.fromfile(file, dtype=np.uint8)
            out = io.BytesIO()
            _eight_bit(image).save(out, "PNG")
    except (UnidentifiedImageError, OSError) as error:
        raise McuError(f"{file}: not an image Pillow can read ({error})") from error
    return np.frombuffer(out.getvalue(), dtype=np.uint8)


def _eight_bit(image: Any) -> Any:
    """A Pillow image with 8 bits a channel: 16-bit grey scaled (Pillow's convert("L") would clip it),
    modes PNG cannot hold as 8 bits (CMYK, YCbCr, float...) as RGB; others as they are."""
    from PIL import Image

    if image.mode in WIDE_MODES:
        pixels = np.asarray(image, dtype=np.float64) * (255 / 65535)
        return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "L")
    return image if image.mode in {"1", "L", "LA", "P", "RGB", "RGBA"} else image.convert("RGB")


def _npz_samples(path: Path) -> _Samples:
    arrays = np.load(path, allow_pickle=False)  # never unpickle user data
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise McuError(f"{path}: missing arrays {missing} (found {sorted(arrays.files)})")
    inputs = {split: _nchw(arrays[f"x_{split}"], f"x_{split}") for split in ("train", "test")}
    labels = {split: arrays[f"y_{split}"].astype(np.int64).reshape(-1) for split in ("train", "test")}
    for split in ("train", "test"):
        if len(labels[split]) != len(inputs[split]):
            raise McuError(f"{path}: x_{split} has {len(inputs[split])} rows, y_{split} {len(labels[split])}")
    items = [
        (f"{split}/{row}", split, int(label)) for split in ("train", "test") for row, label in enumerate(labels[split])
    ]
    n_train = len(labels["train"])
    return _Samples(items, lambda i: inputs["train"][i] if i < n_train else inputs["test"][i - n_train], [])


def _nchw(x: np.ndarray, name: str) -> np.ndarray:
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        x = x.transpose(0, 3, 1, 2)
    elif x.ndim != 4:
        raise McuError(f"{name} must be images [N, H, W], [N, H, W, C] or [N, C, H, W], got shape {list(x.shape)}")
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.floating):
        if x.size and not (x.min() >= 0.0 and x.max() <= 1.0):  # NaN fails both; the service refuses these too
            raise McuError(f"{name}: float images must be finite and in [0, 1] (scale them, or give uint8)")
        return x.astype(np.float32)
    if np.issubdtype(x.dtype, np.integer) and x.min() >= 0 and x.max() <= 255:
        return x.astype(np.uint8)
    raise McuError(f"{name} must be uint8, integers in [0, 255] or floats in [0, 1], got {x.dtype}")


def _write(
    samples: _Samples, out_dir: Path, subjects: dict[str, str], max_shard_bytes: int, on_progress: Progress | None
) -> PreparedDataset:
    from safetensors.numpy import save_file

    known = {sample_id for sample_id, _, _ in samples.items}
    unknown = [s for s in subjects if s not in known]
    if unknown:
        raise McuError(f"the subjects CSV names {len(unknown)} unknown sample ids, e.g. {unknown[:3]}")
    prepared = PreparedDataset(out_dir / "manifest.csv", [], classes=samples.classes)
    with prepared.manifest.open("w", newline="") as file:
        manifest = csv.writer(file)
        manifest.writerow(["sample_id", "split", "shard", "row", "subject_id"])
        for shard_rows in _batches(samples, max_shard_bytes, on_progress):
            shard = out_dir / f"shard-{len(prepared.shards):05d}.safetensors"
            labels = np.array([samples.items[i][2] for _, i in shard_rows], dtype=np.int64)
            if samples.encoded:  # row k is images[offsets[k]:offsets[k + 1]]
                lengths = [len(x) for x, _ in shard_rows]
                save_file(
                    {
                        "images": np.concatenate([x for x, _ in shard_rows]),
                        "labels": labels,
                        "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                    },
                    shard,
                )
            else:
                save_file({"inputs": np.stack([x for x, _ in shard_rows]), "labels": labels}, shard)
            prepared.shards.append(shard)
            for row, (_, index) in enumerate(shard_rows):
                sample_id, split, _ = samples.items[index]
                manifest.writerow([sample_id, split, shard.name, row, subjects.get(sample_id, "")])
    return prepared


def _batches(samples: _Samples, max_bytes: int, on_progress: Progress | None) -> Iterator[list[tuple[np.ndarray, int]]]:
    """(image, sample index) lists holding at most `max_bytes` of pixels or encoded bytes each (at least one
    image)."""
    batch: list[tuple[np.ndarray, int]] = []
    held, shape = 0, None
    for index in range(len(samples.items)):
        image = samples.load(index)
        if shape is None or samples.encoded:
            shape = image.shape
        elif image.shape != shape:
            raise McuError(
                f"sample {samples.items[index][0]} has shape {list(image.shape)}, the first had {list(shape)}"
            )
        if batch and held + image.nbytes > max_bytes:
            yield batch
            batch, held = [], 0
        batch.append((image, index))
        held += image.nbytes
        if on_progress:
            on_progress(index + 1, len(samples.items))
    if batch:
        yield batch
