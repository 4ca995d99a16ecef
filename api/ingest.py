"""Validating an uploaded dataset's safetensors shards (the CSV manifest of sample locations: api/manifest.py).

A shard is in the tensor format (`inputs` [N, C, H, W] and `labels` [N]) or the encoded one (`images`: the
PNG / JPEG files' bytes concatenated, `offsets` [N + 1]: row k is images[offsets[k]:offsets[k + 1]], and
`labels`); every shard of a dataset uses one (docs/datasets.md). Only headers, labels, offsets and each
image's own header are read, a bounded chunk at a time (numpy, no torch, no image decoder). Every problem
found is reported together (up to a limit), naming the shard or the shard's row.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from domain.images import scan_images
from domain.problems import invalid
from storage import InvalidSafetensors, read_header

MAX_REPORTED = 20
PIXEL_CHUNK = 8 << 20  # bytes of float pixels checked at a time
INPUT_DTYPES = {"U8": "uint8", "F32": "float32"}
ENCODED = {"images": "U8", "offsets": "I64", "labels": "I64"}  # the encoded format's tensors, each of rank 1


@dataclass(frozen=True)
class ShardInfo:
    name: str
    rows: int
    input_dtype: str
    input_shape: tuple[int | None, ...]  # (C, H, W); encoded: (C, None, None), C = 1 when every image is grey
    labels: np.ndarray
    encoding: str = "tensor"  # or "encoded"


def _span(file: BinaryIO, tensor: str) -> tuple[int, int]:
    """Where a tensor's bytes lie in the file, from the header `read_header` checked."""
    file.seek(0)
    header_len = int.from_bytes(file.read(8), "little")
    start, end = json.loads(file.read(header_len))[tensor]["data_offsets"]
    return 8 + header_len + start, 8 + header_len + end


def _refused(name: str, problems: list[str]) -> Exception:
    return invalid(
        f"shard '{name}': " + "; ".join(problems[:3]), [{"loc": ["shards", name], "msg": p} for p in problems]
    )


def _read_labels(file: BinaryIO) -> np.ndarray:
    start, end = _span(file, "labels")
    file.seek(start)
    return np.frombuffer(file.read(end - start), dtype="<i8")


def _float_pixel_problem(file: BinaryIO, image_size: int) -> str | None:
    """Float inputs are taken as already in [0, 1] (docs/api.md): NaN, ±Inf or 1e30 would poison every metric.
    Read a chunk at a time, so a large shard is never in memory at once."""
    start, end = _span(file, "inputs")
    file.seek(start)
    position = 0
    while position < end - start:
        chunk = np.frombuffer(file.read(min(PIXEL_CHUNK, end - start - position)), dtype="<f4")
        if not (chunk.min() >= 0.0 and chunk.max() <= 1.0):  # NaN fails both comparisons
            index = int(np.argmax(~((chunk >= 0.0) & (chunk <= 1.0))))
            return (
                f"float32 inputs must be finite and in [0, 1]; row {(position // 4 + index) // image_size} "
                f"holds {chunk[index]!r}"
            )
        position += chunk.nbytes
    return None


def inspect_shard(name: str, file: BinaryIO) -> ShardInfo:
    """Check one shard's format: `inputs` uint8/float32 [N, C, H, W] and `labels` int64 [N], or encoded."""
    file.seek(0)
    try:
        header = read_header(file)
    except InvalidSafetensors as error:
        raise _refused(name, [str(error)]) from error
    if "images" in header or "offsets" in header:
        return _inspect_encoded(name, file, header)
    problems = []
    inputs, labels = header.get("inputs"), header.get("labels")
    if inputs is None or labels is None:
        problems.append("must hold tensors 'inputs' and 'labels' (or, encoded, 'images', 'offsets' and 'labels')")
    else:
        if inputs.dtype not in INPUT_DTYPES or len(inputs.shape) != 4:
            problems.append(
                f"'inputs' must be uint8 or float32 of shape [N, C, H, W], got {inputs.dtype} {list(inputs.shape)}"
            )
        if labels.dtype != "I64" or len(labels.shape) != 1:
            problems.append(f"'labels' must be int64 of shape [N], got {labels.dtype} {list(labels.shape)}")
        elif len(inputs.shape) == 4 and labels.shape[0] != inputs.shape[0]:
            problems.append(f"'inputs' has {inputs.shape[0]} rows but 'labels' has {labels.shape[0]}")
        if len(inputs.shape) == 4 and 0 in inputs.shape[1:]:
            problems.append(f"'inputs' images must not be empty, got shape {list(inputs.shape)}")
    if problems:
        raise _refused(name, problems)
    assert inputs is not None and labels is not None
    if (
        inputs.dtype == "F32"
        and inputs.shape[0]
        and (problem := _float_pixel_problem(file, math.prod(inputs.shape[1:])))
    ):
        raise _refused(name, [problem])
    return ShardInfo(name, inputs.shape[0], INPUT_DTYPES[inputs.dtype], tuple(inputs.shape[1:]), _read_labels(file))


def _inspect_encoded(name: str, file: BinaryIO, header: dict) -> ShardInfo:
    """An encoded shard: the three tensors, well-formed offsets, and every row an accepted PNG / JPEG whose
    header is within the bounds (domain/images.py)."""
    problems = [
        f"'{t}' must be {dtype} of rank 1"
        for t, dtype in ENCODED.items()
        if t not in header or (header[t].dtype, len(header[t].shape)) != (dtype, 1)
    ]
    if extra := sorted(header.keys() - ENCODED.keys()):
        problems.append(f"an encoded shard holds 'images', 'offsets' and 'labels' only, not {extra}")
    if not problems and header["offsets"].shape[0] != header["labels"].shape[0] + 1:
        problems.append(
            f"'offsets' must have one entry more than 'labels' has rows ({header['labels'].shape[0]}), "
            f"got {header['offsets'].shape[0]}"
        )
    if problems:
        raise _refused(name, problems)
    rows = header["labels"].shape[0]
    grey, problems = scan_images(
        file, _span(file, "offsets")[0], _span(file, "images")[0], rows, header["images"].shape[0], MAX_REPORTED
    )
    if problems:
        raise _refused(name, problems)
    return ShardInfo(name, rows, "uint8", (1 if grey else 3, None, None), _read_labels(file), "encoded")


def check_shards_agree(shards: list[ShardInfo]) -> None:
    first = shards[0]
    if mixed := [s for s in shards if s.encoding != first.encoding]:
        raise invalid(
            "shards mix the tensor and the encoded format; a dataset's shards all use one",
            [
                {"loc": ["shards", s.name], "msg": f"{s.encoding} format, while '{first.name}' is {first.encoding}"}
                for s in mixed
            ],
        )
    if first.encoding == "encoded":
        return  # any size; the dataset's channels come from every shard's (dataset_shape)
    bad = [s for s in shards if (s.input_dtype, s.input_shape) != (first.input_dtype, first.input_shape)]
    if bad:
        raise invalid(
            "shards differ in input shape or dtype",
            [
                {
                    "loc": ["shards", s.name],
                    "msg": f"{s.input_dtype} {list(s.input_shape)} differs from "
                    f"'{first.name}': {first.input_dtype} {list(first.input_shape)}",
                }
                for s in bad
            ],
        )


def dataset_shape(shards: list[ShardInfo]) -> tuple[int | None, ...]:
    """The shards' [C, H, W]; encoded images have no common size, and are grey (C = 1) only when all are."""
    if shards[0].encoding == "encoded":
        return (1 if all(s.input_shape[0] == 1 for s in shards) else 3, None, None)
    return shards[0].input_shape
