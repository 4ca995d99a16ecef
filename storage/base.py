"""The object-store interface shared by the local-folder and S3 backends.

Uploads are content-addressed (the key ends in the sha256 of the bytes) so a retried or duplicated task
writes the same object again instead of a second copy, and every write is atomic: a reader sees the old
object, the new one or nothing, never a partial file.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

CHUNK_SIZE = 1 << 20
# Temporary files written inside a store or cache folder start with this, so listings can skip them.
TEMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    sha256: str
    size: int


@dataclass(frozen=True)
class ListedObject:
    key: str
    modified_at: float  # seconds since the epoch: when it was written (or last re-confirmed by `put_stream`)


class StorageError(Exception):
    """Base class for everything the storage layer raises on purpose."""


class ObjectNotFound(StorageError):
    def __init__(self, key: str) -> None:
        super().__init__(f"object not found: {key}")
        self.key = key


class ObjectTooLarge(StorageError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"object is larger than the limit of {limit} bytes")
        self.limit = limit


class StorageUnavailable(StorageError):
    """The store cannot be reached (network down, bucket missing, folder not writable)."""


def check_key(key: str) -> str:
    """Reject keys that could escape a local root or mean different objects on different backends."""
    if not isinstance(key, str) or not key:
        raise ValueError("storage key must be a non-empty string")
    if key.startswith("/") or "\\" in key or "\x00" in key:
        raise ValueError(f"invalid storage key {key!r}: no leading '/', backslashes or NUL bytes")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"invalid storage key {key!r}: empty, '.' and '..' path segments are not allowed")
    return key


SWEEP_AFTER_SECONDS = 3600.0  # a scratch file this old belongs to no upload in progress
_swept_at: dict[Path, float] = {}  # per directory: when this process last swept it


@contextmanager
def scratch_file(directory: Path | None) -> Iterator[Path]:
    """A temporary file in `directory` (system temp if None), removed on exit unless it was moved away.
    Before it, the directory's stale scratch files (a killed process's) are swept, at most every few minutes:
    a process that makes scratch files also removes its crashed predecessors', not only at a restart."""
    directory = Path(directory or tempfile.gettempdir())
    if time.monotonic() - _swept_at.get(directory, -math.inf) > SWEEP_AFTER_SECONDS / 12:
        _swept_at[directory] = time.monotonic()
        sweep_scratch_files(directory, recursive=False)
    fd, name = tempfile.mkstemp(dir=directory, prefix=TEMP_PREFIX, suffix=".part")
    os.close(fd)
    path = Path(name)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def sweep_scratch_files(
    directory: Path, *, recursive: bool = True, older_than_seconds: float = SWEEP_AFTER_SECONDS
) -> int:
    """Delete scratch files a killed process left in `directory` (and below it, when `recursive`): an
    upload cut off mid-way. Younger ones may belong to an upload in progress and stay. Returns the count."""
    cutoff = time.time() - older_than_seconds
    removed = 0
    pattern = f"{TEMP_PREFIX}*.part"
    found = directory.rglob(pattern) if recursive else directory.glob(pattern)
    for path in found if directory.is_dir() else ():
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:  # another sweeper was first
            continue
    return removed


def copy_hashed(src: BinaryIO, dst: BinaryIO, max_bytes: int | None = None) -> tuple[str, int]:
    """Copy in chunks, returning (sha256 hex, size); stop reading as soon as `max_bytes` is exceeded."""
    digest = hashlib.sha256()
    size = 0
    while chunk := src.read(CHUNK_SIZE):
        size += len(chunk)
        if max_bytes is not None and size > max_bytes:
            raise ObjectTooLarge(max_bytes)
        digest.update(chunk)
        dst.write(chunk)
    dst.flush()
    os.fsync(dst.fileno())
    return digest.hexdigest(), size


def rewound(stream: BinaryIO) -> BinaryIO:
    """The stream, from its start again (to store a spooled upload a second time)."""
    stream.seek(0)
    return stream


class ObjectStore(ABC):
    """Keys are '/'-separated relative paths; see `check_key`."""

    # --- backend hooks -------------------------------------------------------------------------------
    @abstractmethod
    def _spool_dir(self, key_dir: str) -> Path | None:
        """Where to write a temporary file that will become an object under `key_dir` (None: system temp)."""

    @abstractmethod
    def _store_file(self, key: str, path: Path) -> None:
        """Make the finished file at `path` the object at `key`, atomically. May move `path` away."""

    # --- reads and deletes each backend implements ---------------------------------------------------
    @abstractmethod
    def iter_chunks(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """Stream an object; raises ObjectNotFound on the call, before the first chunk."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete one object; a missing key is not an error (deletes are retried)."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> list[str]:
        """Delete every object under the folder `prefix` (keys starting with `prefix/`); returns their keys."""

    @abstractmethod
    def ping(self) -> None:
        """Raise StorageUnavailable with a short reason when the store cannot be used."""

    @abstractmethod
    def list_objects(self, prefix: str) -> Iterator[ListedObject]:
        """Every finished object under the folder `prefix`, with its modification time."""

    @abstractmethod
    def modified_at(self, key: str) -> float:
        """One object's modification time, as `list_objects` gives it; raises ObjectNotFound."""

    @abstractmethod
    def sweep_incomplete(self, older_than_seconds: float) -> int:
        """Remove uploads a killed process left unfinished, once older than this (an upload in progress is
        younger): S3's incomplete multipart uploads, a folder's scratch files. Returns the count."""

    @abstractmethod
    def _touch(self, key: str) -> None:
        """Make an existing object's modification time now (a new upload of the same content just reused it);
        raises ObjectNotFound when it is gone."""

    # --- shared behaviour ----------------------------------------------------------------------------
    def put_stream(self, prefix: str, stream: BinaryIO, max_bytes: int | None = None) -> ObjectInfo:
        """Upload under `prefix/<sha256>`, spooling to disk so large uploads never sit in memory."""
        prefix = check_key(prefix.rstrip("/"))
        with scratch_file(self._spool_dir(prefix)) as tmp:
            with tmp.open("wb") as spool:
                digest, size = copy_hashed(stream, spool, max_bytes)
            key = f"{prefix}/{digest}"
            if not self._renewed(key):
                self._store_file(key, tmp)
        return ObjectInfo(key=key, sha256=digest, size=size)

    def _renewed(self, key: str) -> bool:
        """Whether the object of this content is already stored, its time made now: nothing to upload twice, and
        the sweeper's grace period covers the row about to reference it. One call, no separate existence check:
        the sweeper may remove an old unreferenced object between a check and the renewal. False: upload it."""
        try:
            self._touch(key)
        except ObjectNotFound:
            return False
        return True

    def put_bytes(self, prefix: str, data: bytes) -> ObjectInfo:
        """Content-addressed upload of a small payload."""
        return self.put_stream(prefix, io.BytesIO(data))

    def put_at(self, key: str, data: bytes) -> ObjectInfo:
        """Write or overwrite the object at an explicit key (checkpoints), atomically."""
        key = check_key(key)
        with scratch_file(self._spool_dir(key.rpartition("/")[0])) as tmp:
            with tmp.open("wb") as spool:
                digest, size = copy_hashed(io.BytesIO(data), spool)
            self._store_file(key, tmp)
        return ObjectInfo(key=key, sha256=digest, size=size)

    def get_bytes(self, key: str) -> bytes:
        return b"".join(self.iter_chunks(key))
