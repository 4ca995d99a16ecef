import contextlib
import hashlib
import io
import json
import pickle
import random
import struct
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from storage import InvalidSafetensors, TensorInfo, load_numpy, read_header, save_numpy, sha256_file


def _tensors() -> dict[str, np.ndarray]:
    return {
        "conv.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
        "fc.bias": np.array([1, -2, 3], dtype=np.int64),
        "mask": np.array([0, 1, 1, 0], dtype=np.uint8),
    }


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "weights.safetensors"
    path.write_bytes(data)
    return path


def _header_bytes(header: dict, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def test_round_trip(tmp_path: Path) -> None:
    path = _write(tmp_path, save_numpy(_tensors()))
    assert read_header(path) == {
        "conv.weight": TensorInfo("F32", (2, 3, 4)),
        "fc.bias": TensorInfo("I64", (3,)),
        "mask": TensorInfo("U8", (4,)),
    }
    with path.open("rb") as fh:  # streams work too and keep their position
        assert read_header(fh)["mask"] == TensorInfo("U8", (4,))
        assert fh.tell() == 0
    loaded = load_numpy(path)
    for name, array in _tensors().items():
        np.testing.assert_array_equal(loaded[name], array)
        assert loaded[name].dtype == array.dtype


def test_metadata_is_ignored() -> None:
    data = _header_bytes(
        {"__metadata__": {"format": "pt"}, "x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\x00" * 4
    )
    assert read_header(io.BytesIO(data)) == {"x": TensorInfo("F32", (1,))}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (pickle.dumps({"a": 1}), "looks like a pickle; upload weights as safetensors"),
        (b"PK\x03\x04" + bytes(200), r"looks like a zip archive \(torch.save format\)"),
        (random.Random(0).randbytes(4096), "header length .* over the 8 MiB limit"),
        (struct.pack("<Q", 200 << 20) + b"{}", "header length 209715200 is over the 8 MiB limit"),
        (struct.pack("<Q", 5000) + b"{}", "more than the file's 2 bytes after it"),
        (b"abc", "only 3 bytes long"),
        (struct.pack("<Q", 2) + b"[]", "header is not a JSON object"),
        (struct.pack("<Q", 3) + b"{x}", "header is not valid JSON"),
    ],
    ids=["pickle", "zip", "random", "oversized-header", "header-past-end", "tiny", "json-list", "bad-json"],
)
def test_rejects_non_safetensors(tmp_path: Path, data: bytes, message: str) -> None:
    with pytest.raises(InvalidSafetensors, match=message):
        read_header(_write(tmp_path, data))


def test_rejects_truncated_and_padded(tmp_path: Path) -> None:
    valid = save_numpy(_tensors())
    with pytest.raises(InvalidSafetensors, match=r"tensors need 124 data bytes but the file has 114 \(truncated"):
        read_header(io.BytesIO(valid[:-10]))
    with pytest.raises(InvalidSafetensors, match="3 unexpected bytes after the last tensor"):
        read_header(io.BytesIO(valid + b"\x00\x00\x00"))
    with pytest.raises(InvalidSafetensors, match="not a valid safetensors file"):
        load_numpy(_write(tmp_path, valid[:-10]))


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"dtype": "Q9", "shape": [1], "data_offsets": [0, 4]}, "unknown dtype 'Q9'"),
        ({"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}, "invalid shape"),
        ({"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}, "invalid data_offsets"),
        ({"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}, "stores 4 bytes but F32"),
        ({"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}, "starts at data byte 4, expected 0"),
    ],
)
def test_rejects_bad_entries(entry: dict, message: str) -> None:
    with pytest.raises(InvalidSafetensors, match=message):
        read_header(io.BytesIO(_header_bytes({"x": entry}, b"\x00" * 8)))


def test_rejects_duplicate_names() -> None:
    raw = b'{"x": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, "x": {}}'
    with pytest.raises(InvalidSafetensors, match="names 'x' twice"):
        read_header(io.BytesIO(struct.pack("<Q", len(raw)) + raw + b"\x00"))


def test_sha256_file(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # several read chunks
    assert sha256_file(_write(tmp_path, data)) == hashlib.sha256(data).hexdigest()


def _empty_tensors(count: int) -> bytes:
    raw = b"{" + b",".join(b'"t%d":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}' % i for i in range(count)) + b"}"
    return struct.pack("<Q", len(raw)) + raw


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"x": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1' + b"0" * 5000 + b"]}}", "number too long"),
        (b'{"x": {"dtype": "U8", "shape": [' + b"9" * 21 + b'], "data_offsets": [0, 1]}}', "invalid shape"),
        (b'{"x": {"dtype": "U8", "shape": [1' + b", 1" * 17 + b'], "data_offsets": [0, 1]}}', "at most 16 dim"),
        (b'{"x": {"dtype": [], "shape": [1], "data_offsets": [0, 1]}}', "unknown dtype"),
        (b'{"x": {"dtype": "U8", "shape": [' + b"[]," * 80_001 + b'1], "data_offsets": [0, 1]}}', "more lists"),
        (b'{"x": {"dtype": "U8", "shape": [NaN], "data_offsets": [0, 1]}}', "NaN"),
        (b'{"x": {"dtype": "U8", "shape": [Infinity], "data_offsets": [0, 1]}}', "Infinity"),
        (b'{"\\ud800": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}', "lone UTF-16 surrogate"),
        (b'{"a\\u0000": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}', "NUL"),
    ],
    ids=[
        "offset-5000-digits",
        "dimension-21-digits",
        "rank-18",
        "dtype-list",
        "80k-lists",
        "nan",
        "infinity",
        "surrogate-name",
        "nul-name",
    ],
)
def test_rejects_crafted_numbers_and_names(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidSafetensors, match=message):
        read_header(io.BytesIO(struct.pack("<Q", len(raw)) + raw + b"\x00"))


def _cpu_seconds(read: Callable[[], object]) -> float:
    """The least of three runs' CPU time in this thread: a busy machine (steal time, a collection of the
    suite's heap) inflates single runs, never all three."""
    times = []
    for _ in range(3):
        started = time.thread_time()
        with contextlib.suppress(InvalidSafetensors):
            read()
        times.append(time.thread_time() - started)
    return min(times)


@pytest.mark.parametrize("count", [20_001, 150_000, 1_000_000], ids=["one-over", "150k", "a-million"])
def test_a_header_of_too_many_tensors_is_refused_quickly(count: int) -> None:
    """Refusing any count costs no more than reading a header at the limit: the work stops at the limit
    (a ratio, not seconds, so that the check holds on a slow or loaded machine)."""
    data, at_limit = _empty_tensors(count), _empty_tensors(20_000)
    with pytest.raises(InvalidSafetensors, match=r"more than 20000 tensors|over the 8 MiB limit"):
        read_header(io.BytesIO(data))
    refusing = _cpu_seconds(lambda: read_header(io.BytesIO(data)))
    reading = _cpu_seconds(lambda: read_header(io.BytesIO(at_limit)))
    assert refusing < 2 * reading + 0.05


def test_a_header_at_the_tensor_limit_is_read() -> None:
    assert len(read_header(io.BytesIO(_empty_tensors(20_000)))) == 20_000
