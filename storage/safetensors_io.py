"""Safetensors checks and numpy I/O, with no torch import, so the API can validate uploads cheaply.

Weights are accepted as safetensors only: a pickle or a torch.save zip can run code when loaded, so
`read_header` rejects them by their magic bytes with a message that says what to upload instead.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import safetensors.numpy

from domain.inputs import text_problem, unique_keys

# A header is parsed in memory by Python: bounded so that a crafted one is refused in well under a second.
# The largest classifiers' state_dicts have a few thousand tensors (a few hundred KiB of header).
MAX_HEADER_BYTES = 8 << 20
MAX_TENSORS = 20_000
MAX_RANK = 16  # dimensions of one tensor
MAX_SHOWN = 80  # characters of a header value quoted in an error

# Bits per element for each dtype name the safetensors format defines.
_DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
    "U16": 16, "I16": 16, "F16": 16, "BF16": 16, "U32": 32, "I32": 32, "F32": 32,
    "U64": 64, "I64": 64, "F64": 64, "C64": 64,
}  # fmt: skip

# Formats people upload by mistake, recognised by their first bytes.
_FOREIGN_FORMATS = (
    (b"PK\x03\x04", "a zip archive (torch.save format)"),
    (b"PK\x05\x06", "a zip archive (torch.save format)"),
    (b"\x93NUMPY", "a numpy .npy file"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (Keras format)"),
    (b"GGUF", "a GGUF file"),
    *((bytes([0x80, protocol]), "a pickle") for protocol in range(2, 6)),
)


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]


class InvalidSafetensors(ValueError):
    """The bytes are not a well-formed safetensors file; the message says why, for the uploader."""


def _invalid(reason: str) -> InvalidSafetensors:
    return InvalidSafetensors(f"not a valid safetensors file: {reason}")


def _not_safetensors(reason: str, head: bytes) -> InvalidSafetensors:
    """Name the format when the first bytes identify one; otherwise report the structural reason."""
    for magic, what in _FOREIGN_FORMATS:
        if head.startswith(magic):
            return InvalidSafetensors(f"not a safetensors file: looks like {what}; upload weights as safetensors")
    return _invalid(reason)


def _objects_checked() -> Any:
    """json's object hook: no key twice, and at most MAX_TENSORS + 2 objects in all (one per tensor, the header,
    __metadata__), counted while parsing, so that a header of a million tensors stops early."""
    count = 0

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal count
        count += 1
        if count > MAX_TENSORS + 2:
            raise _invalid(f"header describes more than {MAX_TENSORS} tensors")
        return unique_keys(pairs, on_duplicate=lambda key: _invalid(f"header names {_short(key)} twice"))

    return hook


def _no_constant(name: str) -> Any:
    raise _invalid(f"header holds {name}, which is not JSON")


def _is_int(value: Any) -> bool:
    """An offset or a dimension: a non-negative int64 (2^63 and beyond is no file, and overflows a float)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def _short(value: Any) -> str:
    shown = repr(value) if not isinstance(value, list) or len(value) <= MAX_RANK else f"[{len(value)} items]"
    return shown if len(shown) <= MAX_SHOWN else shown[:MAX_SHOWN] + "..."


def _tensor_info(name: str, entry: Any) -> tuple[TensorInfo, int, int]:
    if problem := text_problem(name):  # names end up in errors and stored records
        raise _invalid(f"a tensor name {problem}")
    if not isinstance(entry, dict):
        raise _invalid(f"header entry {_short(name)} is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in _DTYPE_BITS:  # a list here would be unhashable
        raise _invalid(f"tensor {_short(name)} has unknown dtype {_short(dtype)}")
    if not isinstance(shape, list) or len(shape) > MAX_RANK or not all(_is_int(d) for d in shape):
        raise _invalid(f"tensor {_short(name)} has an invalid shape {_short(shape)} (at most {MAX_RANK} dimensions)")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
        raise _invalid(f"tensor {_short(name)} has invalid data_offsets {_short(offsets)}")
    begin, end = offsets
    if not 0 <= begin <= end:
        raise _invalid(f"tensor {_short(name)} has invalid data_offsets {_short(offsets)}")
    needed_bits = math.prod(shape) * _DTYPE_BITS[dtype]
    if needed_bits != (end - begin) * 8:
        raise _invalid(f"tensor {_short(name)} stores {end - begin} bytes but {dtype}{shape} needs {needed_bits / 8:g}")
    return TensorInfo(dtype=dtype, shape=tuple(shape)), begin, end


def _parse(fh: BinaryIO, total: int) -> dict[str, TensorInfo]:
    head = fh.read(8)
    if len(head) < 8:
        raise _not_safetensors(f"only {total} bytes long", head)
    (header_len,) = struct.unpack("<Q", head)
    if header_len > MAX_HEADER_BYTES:
        raise _not_safetensors(f"header length {header_len} is over the {MAX_HEADER_BYTES >> 20} MiB limit", head)
    if header_len > total - 8:
        raise _not_safetensors(
            f"header length {header_len} is more than the file's {total - 8} bytes after it (truncated file?)", head
        )
    raw = fh.read(header_len)
    if not raw.startswith(b"{"):
        raise _not_safetensors("header is not a JSON object", head + raw[:8])
    if raw.count(b"[") > 4 * MAX_TENSORS:  # two lists a tensor: millions of `[]` would take seconds to parse
        raise _invalid(f"header holds more lists than {MAX_TENSORS} tensors need")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_objects_checked(), parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _invalid(f"header is not valid JSON ({exc})") from None
    except ValueError as exc:  # not InvalidSafetensors: Python's limit on integer digits (4,300), 10^5000 say
        if isinstance(exc, InvalidSafetensors):
            raise
        raise _invalid("header holds a number too long to be an offset or a dimension") from None
    except RecursionError:  # a header nested thousands deep: no tensor layout looks like that
        raise _invalid("header is nested too deeply") from None
    if not isinstance(header, dict):
        raise _invalid("header is not a JSON object")
    if len(header.keys() - {"__metadata__"}) > MAX_TENSORS:
        raise _invalid(f"header describes more than {MAX_TENSORS} tensors")

    tensors: dict[str, TensorInfo] = {}
    spans: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise _invalid("__metadata__ must map strings to strings")
            continue
        tensors[name], begin, end = _tensor_info(name, entry)
        spans.append((begin, end, name))

    # The tensors must tile the data section exactly: no overlaps, no gaps, nothing missing or extra.
    data_len = total - 8 - header_len
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise _invalid(f"tensor {_short(name)} starts at data byte {begin}, expected {position} (gap or overlap)")
        position = end
    if position > data_len:
        raise _invalid(f"tensors need {position} data bytes but the file has {data_len} (truncated file?)")
    if position < data_len:
        raise _invalid(f"{data_len - position} unexpected bytes after the last tensor")
    return tensors


def read_header(source: str | os.PathLike[str] | BinaryIO) -> dict[str, TensorInfo]:
    """Validate the whole layout and return each tensor's dtype and shape, without reading tensor data.

    A stream is read from its current position and left there afterwards; it must be seekable.
    """
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as fh:
            return _parse(fh, os.fstat(fh.fileno()).st_size)
    start = source.tell()
    total = source.seek(0, os.SEEK_END) - start
    source.seek(start)
    try:
        return _parse(source, total)
    finally:
        source.seek(start)


def load_numpy(path: Path) -> dict[str, np.ndarray]:
    """Load all tensors as numpy arrays, after `read_header` has checked the file."""
    read_header(path)
    return safetensors.numpy.load_file(path)


def save_numpy(tensors: dict[str, np.ndarray]) -> bytes:
    return safetensors.numpy.save(tensors)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
