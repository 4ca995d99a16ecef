"""Row sources: where a split's inputs come from, gathered a batch of rows at a time.

A row source has `len()`, `shape` and `dtype` (those of the whole [N, C, H, W] input, as the model sees it)
and `source[rows]` (rows: an int64 tensor) returning exactly those rows, in that order, as one uint8 or
float32 tensor. A tensor is one (the in-memory fast path); `RowView` is a lazy selection of another source's
rows (retain, forget and test samples compose views instead of copying); `ShardRows` reads rows from
safetensors shard files with positioned reads, so memory is set by the batch, never by the dataset;
`Transformed` passes another source's rows through the model's input transform (resize / center crop,
unlearning/transforms.py); `EncodedRows` reads PNG / JPEG rows of encoded shards, decodes and transforms
each. Every consumer (training, evaluation, BatchNorm, materialisation) thus sees transformed rows without
knowing: the transform lives here, in the row sources.

Batches of a streamed source are gathered through torch's DataLoader (a map-style dataset keyed by a whole
batch's rows, `workers` loader processes, where images are decoded and transformed too). Not a streaming
library: webdataset reads tar shards sequentially and shuffles within a buffer (approximate);
mosaicml-streaming and litdata do index samples (`dataset[i]`), but in their own shard formats (MDS, litdata
chunks: a second copy of every dataset, to be rewritten on erasure) and their iterators order samples by
their own shuffle algorithms. Unlearning needs exact random access by position
in the shards the service already stores (seeded batches that interleave forget rows, sparse retain views after
erasure): positioned reads on safetensors plus the DataLoader do that with no second format.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import struct
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from unlearning.transforms import InputTransform

_DTYPES = {"U8": torch.uint8, "F32": torch.float32, "I64": torch.int64}


@runtime_checkable
class RowSource(Protocol):
    shape: Any  # [N, C, H, W]
    dtype: torch.dtype

    def __len__(self) -> int: ...

    def __getitem__(self, rows: Tensor) -> Tensor: ...


def take_rows(source: Tensor | RowSource, positions: Tensor) -> Tensor | RowSource:
    """`source` restricted to `positions`: a tensor is indexed (small, in memory), anything else viewed lazily."""
    if isinstance(source, Tensor):
        return source[positions.to(source.device)]
    if isinstance(source, RowView):  # a view of a view reads the base directly
        return RowView(source.base, source.index[positions.cpu()])
    return RowView(source, positions.cpu())


def loader_workers(source: Tensor | RowSource) -> int:
    """DataLoader processes a source asks for (a tensor: none, it is in memory already)."""
    return 0 if isinstance(source, Tensor) else int(getattr(source, "workers", 0))


def source_bytes(source: Tensor | RowSource) -> int:
    """Bytes of every row of `source` as gathered (after any transform): what materialising it holds."""
    return int(torch.Size(source.shape).numel()) * torch.empty(0, dtype=source.dtype).element_size()


class RowView:
    """Rows `index` of `base`, read only when gathered."""

    def __init__(self, base: RowSource, index: Tensor) -> None:
        self.base, self.index = base, index.to(torch.int64)
        self.dtype = base.dtype
        self.shape = torch.Size((len(index), *base.shape[1:]))
        self.workers = loader_workers(base)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, rows: Tensor) -> Tensor:
        return self.base[self.index[rows.cpu()]]


def safetensors_layout(path: str | Path, name: str) -> tuple[int, torch.dtype, tuple[int, ...]]:
    """(byte offset in the file, dtype, shape) of tensor `name`, from the header alone."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        entry = json.loads(f.read(length))[name]
    if entry["dtype"] not in _DTYPES:
        raise ValueError(f"{path}: {name} has dtype {entry['dtype']}, expected one of {sorted(_DTYPES)}")
    return 8 + length + entry["data_offsets"][0], _DTYPES[entry["dtype"]], tuple(entry["shape"])


class _ShardFiles:
    """Shard files opened on first use: `open_shard(i)` gives shard i's path (e.g. fetched into a verified cache
    on first use); its fd is held from then on, so a cache that evicts the file only unlinks its name. Each
    process opens its own (a forked loader process never shares file offsets). Reads use os.pread: unlike
    touching an mmap, they leave no shard pages in this process's memory."""

    tensor: str  # the tensor whose rows are read
    open_shard: Callable[[int], Path]

    def _open(self) -> None:
        self._files: dict[int, tuple[int, int]] = {}  # shard -> (fd, file offset of `tensor`'s data)
        self._pid = os.getpid()

    def _check(self, index: int, dtype: torch.dtype, shape: tuple[int, ...]) -> None:
        """Raise if shard `index`'s tensor is not what this source reads."""
        raise NotImplementedError

    def _file(self, index: int) -> tuple[int, int]:
        if self._pid != os.getpid():  # a forked loader process: its own fds, never shared file offsets
            self._files, self._pid = {}, os.getpid()
        if index not in self._files:
            path = self.open_shard(index)
            offset, dtype, shape = safetensors_layout(path, self.tensor)
            self._check(index, dtype, shape)
            self._files[index] = (os.open(path, os.O_RDONLY), offset)
        return self._files[index]

    def close(self) -> None:
        for fd, _ in self._files.values():
            os.close(fd)
        self._files = {}

    def __getstate__(self) -> dict[str, Any]:  # a spawned loader process opens its own files
        return self.__dict__ | {"_files": {}}

    def __del__(self) -> None:
        if getattr(self, "_pid", None) == os.getpid():
            self.close()


class ShardRows(_ShardFiles):
    """Row k is row `row[k]` of shard `shard[k]`'s `inputs` tensor. Rows are contiguous in a safetensors
    tensor: offset + row * row_bytes."""

    tensor = "inputs"

    def __init__(
        self,
        open_shard: Callable[[int], Path],
        shard: Tensor,
        row: Tensor,
        row_shape: Sequence[int],
        dtype: torch.dtype,
        workers: int = 0,
    ) -> None:
        self.open_shard, self.shard, self.row = open_shard, shard.to(torch.int64), row.to(torch.int64)
        self.shape = torch.Size((len(shard), *row_shape))
        self.dtype, self.workers = dtype, workers
        self.row_bytes = int(torch.Size(row_shape).numel()) * torch.empty(0, dtype=dtype).element_size()
        self._open()

    def __len__(self) -> int:
        return len(self.shard)

    def _check(self, index: int, dtype: torch.dtype, shape: tuple[int, ...]) -> None:
        if dtype != self.dtype or torch.Size(shape[1:]) != self.shape[1:]:
            raise ValueError(
                f"shard {index} holds {dtype}{list(shape)}, expected {self.dtype} rows of {list(self.shape[1:])}"
            )

    def __getitem__(self, rows: Tensor) -> Tensor:
        rows = rows.cpu()
        if len(rows) == 0:  # e.g. a stratified batch without retain rows
            return torch.empty((0, *self.shape[1:]), dtype=self.dtype)
        shards, within = self.shard[rows].tolist(), self.row[rows].tolist()
        size = self.row_bytes
        buffer = bytearray(size * len(shards))
        for k, (s, r) in enumerate(zip(shards, within, strict=True)):
            fd, offset = self._file(s)
            chunk = os.pread(fd, size, offset + r * size)
            if len(chunk) != size:
                raise OSError(f"shard {s} ends before row {r}")
            buffer[k * size : (k + 1) * size] = chunk
        return torch.frombuffer(buffer, dtype=self.dtype).view(len(shards), *self.shape[1:])


class Transformed:
    """`base`'s rows through the model's input transform, a gathered batch at a time (stored pixels of one size:
    a tensor dataset). Its shape is the transformed one."""

    def __init__(self, base: Tensor | RowSource, transform: InputTransform) -> None:
        self.base, self.transform = base, transform
        self.size = transform.output_size((int(base.shape[2]), int(base.shape[3])))
        self.shape = torch.Size((len(base), base.shape[1], *self.size))
        self.dtype, self.workers = base.dtype, loader_workers(base)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, rows: Tensor) -> Tensor:
        if len(rows) == 0:
            return torch.empty((0, *self.shape[1:]), dtype=self.dtype)
        return self.transform(self.base[rows], expected=self.size)


def read_offsets(path: str | Path) -> Tensor:
    """An encoded shard's `offsets` [rows + 1]: row k is images[offsets[k]:offsets[k + 1]]."""
    offset, dtype, shape = safetensors_layout(path, "offsets")
    if dtype != torch.int64 or len(shape) != 1:
        raise ValueError(f"{path}: offsets are {dtype}{list(shape)}, expected int64 [rows + 1]")
    with open(path, "rb") as f:
        data = os.pread(f.fileno(), 8 * shape[0], offset)
    return torch.frombuffer(bytearray(data), dtype=torch.int64)


class EncodedRows(_ShardFiles):
    """Row k is the PNG / JPEG image at row `row[k]` of shard `shard[k]` (an encoded shard: its bytes are
    images[offsets[r]:offsets[r + 1]]; `offsets` maps each shard index to its offsets, read once at load).
    Gathering reads each row's bytes with one positioned read, decodes it with Pillow to `channels` (mode "L"
    or "RGB"; alpha dropped, EXIF orientation not applied, as `Image.open(f).convert(mode)` does), makes it a
    uint8 tensor [C, H, W] (torchvision's `pil_to_tensor`), applies the model's input transform, which must
    give every image `size` (height, width), and stacks them: what a user's pipeline of PILToTensor, Resize
    and CenterCrop gives, to the bit."""

    tensor = "images"
    dtype = torch.uint8

    def __init__(
        self,
        open_shard: Callable[[int], Path],
        shard: Tensor,
        row: Tensor,
        offsets: dict[int, Tensor],
        channels: int,
        transform: InputTransform,
        size: tuple[int, int],
        workers: int = 0,
    ) -> None:
        self.open_shard, self.shard = open_shard, shard.to(torch.int64)
        self.start = torch.empty(len(shard), dtype=torch.int64)
        self.length = torch.empty(len(shard), dtype=torch.int64)
        for index in self.shard.unique().tolist():
            here = self.shard == index
            within = row[here].to(torch.int64)
            self.start[here] = offsets[index][within]
            self.length[here] = offsets[index][within + 1] - self.start[here]
        self.mode = "L" if channels == 1 else "RGB"
        self.transform, self.size, self.workers = transform, size, workers
        self.shape = torch.Size((len(shard), channels, *size))
        self._open()

    def __len__(self) -> int:
        return len(self.shard)

    def _check(self, index: int, dtype: torch.dtype, shape: tuple[int, ...]) -> None:
        if dtype != torch.uint8 or len(shape) != 1:
            raise ValueError(f"shard {index} holds images as {dtype}{list(shape)}, expected uint8 bytes")

    def __getitem__(self, rows: Tensor) -> Tensor:
        rows = rows.cpu()
        out = torch.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        spans = zip(self.shard[rows].tolist(), self.start[rows].tolist(), self.length[rows].tolist(), strict=True)
        for k, (s, start, length) in enumerate(spans):
            fd, offset = self._file(s)
            data = os.pread(fd, length, offset + start)
            if len(data) != length:
                raise OSError(f"shard {s} ends before the image at byte {start}")
            out[k] = self.transform(self.decode(data, f"shard {s}, byte {start}"), expected=self.size)
        return out

    def decode(self, data: bytes, where: str) -> Tensor:
        from PIL import Image, UnidentifiedImageError
        from torchvision.transforms.v2.functional import pil_to_tensor

        try:
            with Image.open(io.BytesIO(data), formats=("PNG", "JPEG")) as image:
                return pil_to_tensor(image.convert(self.mode))
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise ValueError(f"the image at {where} cannot be decoded: {error}") from error


def materialize(source: Tensor | RowSource, batch_rows: int = 4096) -> Tensor:
    """Every row of `source` in one tensor (the in-memory fast path for small sets)."""
    if isinstance(source, Tensor):
        return source
    out = torch.empty(tuple(source.shape), dtype=source.dtype)
    for chunk in torch.arange(len(source)).split(batch_rows):
        out[chunk] = source[chunk]
    return out


K = TypeVar("K")


class _Keyed(TorchDataset):
    """A map-style dataset whose keys are whole batches (the batch sampler's output, made up front)."""

    def __init__(self, fetch: Callable[[Any], Any], keys: Sequence[Any]) -> None:
        self.fetch, self.keys = fetch, keys

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> Any:
        return self.fetch(self.keys[index])


def gathered(fetch: Callable[[K], Any], keys: Sequence[K], workers: int) -> Iterator[Any]:
    """fetch(key) for each key, in order: in this process, or prefetched by `workers` DataLoader processes
    (each key is one batch: no collation, no re-batching)."""
    if workers <= 0 or multiprocessing.current_process().daemon:
        # A daemonic process may not start children: a Celery prefork child is one (checked: the DataLoader
        # fails there with "daemonic processes are not allowed to have children"); the service's worker runs
        # `--pool=solo`, where loader processes work. Elsewhere the batches are gathered in this process.
        yield from map(fetch, keys)
        return
    yield from DataLoader(
        _Keyed(fetch, keys),
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        collate_fn=lambda item: item,
        prefetch_factor=2,
        persistent_workers=False,
    )
