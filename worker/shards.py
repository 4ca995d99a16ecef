"""A dataset shard rewritten without some of its rows (worker/erasure.py), in either shard format
(docs/datasets.md): the file to store instead, holding every other row in its order.

- Tensor shards (`inputs` [N, C, H, W], `labels` [N]): every tensor indexed by row keeps the kept rows. The
  shard is read into memory (it is at most the upload limit; a tensor shard is the size of its pixels).
- Encoded shards (`images`, `offsets` [N + 1], `labels` [N]): the kept rows' bytes are copied one image at a
  time into a temporary file, `offsets` recomputed; memory holds offsets and labels (16 bytes a row) and one
  image, never the shard.
"""

from __future__ import annotations

import io
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import BinaryIO

import torch
from safetensors.torch import load_file
from safetensors.torch import save as save_tensors

from unlearning.rows import read_offsets, safetensors_layout


def without_rows(path: Path, kept: torch.Tensor) -> BinaryIO:
    """A readable file of shard `path` holding only the rows where `kept` (bool [N]) is true; close it after."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        encoded = "images" in json.loads(f.read(length))
    return _encoded_without(path, kept) if encoded else _tensors_without(path, kept)


def _tensors_without(path: Path, kept: torch.Tensor) -> BinaryIO:
    rows = len(kept)
    tensors = load_file(path)
    return io.BytesIO(
        save_tensors(
            {name: (t[kept] if t.dim() and t.shape[0] == rows else t).contiguous() for name, t in tensors.items()}
        )
    )


def _encoded_without(path: Path, kept: torch.Tensor) -> BinaryIO:
    offsets = read_offsets(path)
    images_at = safetensors_layout(path, "images")[0]
    labels_at, _, shape = safetensors_layout(path, "labels")
    with open(path, "rb") as f:
        labels = torch.frombuffer(bytearray(os.pread(f.fileno(), 8 * shape[0], labels_at)), dtype=torch.int64)
    starts, ends = offsets[:-1][kept], offsets[1:][kept]
    new_offsets = torch.cat([torch.zeros(1, dtype=torch.int64), (ends - starts).cumsum(0)])
    total = int(new_offsets[-1])
    # The header, then offsets and labels (8-byte aligned after a header padded to 8), then the images.
    entries = {
        "offsets": ("I64", list(new_offsets.shape)),
        "labels": ("I64", [int(kept.sum())]),
        "images": ("U8", [total]),
    }
    header, position = {}, 0
    for name, (dtype, tensor_shape) in entries.items():
        size = tensor_shape[0] * (8 if dtype == "I64" else 1)
        header[name] = {"dtype": dtype, "shape": tensor_shape, "data_offsets": [position, position + size]}
        position += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    out = tempfile.TemporaryFile()  # noqa: SIM115 (the caller closes it)
    out.write(struct.pack("<Q", len(raw)) + raw)
    out.write(new_offsets.numpy().astype("<i8").tobytes())
    out.write(labels[kept].numpy().astype("<i8").tobytes())
    with open(path, "rb") as f:
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            out.write(os.pread(f.fileno(), end - start, images_at + start))
    out.seek(0)
    return out
