"""A folder as an object store: the embedded default, and the backend tests can inspect directly."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from storage.base import (
    CHUNK_SIZE,
    TEMP_PREFIX,
    ListedObject,
    ObjectNotFound,
    ObjectStore,
    StorageUnavailable,
    check_key,
    sweep_scratch_files,
)


def _read_chunks(fh: BinaryIO, chunk_size: int) -> Iterator[bytes]:
    with fh:
        while chunk := fh.read(chunk_size):
            yield chunk


class LocalStore(ObjectStore):
    """Objects are files at `root/<key>`; writes go to a temp file in the same folder, then `os.replace`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _spool_dir(self, key_dir: str) -> Path:
        # Spooling next to the final file makes the last step a rename, not a copy.
        directory = self.root / key_dir if key_dir else self.root
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    def _store_file(self, key: str, path: Path) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)

    def iter_chunks(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        try:
            fh = self._path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        return _read_chunks(fh, chunk_size)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        if path.is_file():
            path.unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> list[str]:
        directory = self._path(prefix.rstrip("/"))
        if not directory.is_dir():
            return []
        keys = sorted(
            p.relative_to(self.root).as_posix()
            for p in directory.rglob("*")
            if p.is_file() and not p.name.startswith(TEMP_PREFIX)
        )
        shutil.rmtree(directory)
        return keys

    def list_objects(self, prefix: str) -> Iterator[ListedObject]:
        directory = self._path(prefix.rstrip("/"))
        for path in sorted(directory.rglob("*")) if directory.is_dir() else ():
            try:
                if path.is_file() and not path.name.startswith(TEMP_PREFIX):
                    yield ListedObject(path.relative_to(self.root).as_posix(), path.stat().st_mtime)
            except FileNotFoundError:  # deleted meanwhile
                continue

    def modified_at(self, key: str) -> float:
        try:
            return self._path(key).stat().st_mtime
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def sweep_incomplete(self, older_than_seconds: float) -> int:
        return sweep_scratch_files(self.root, older_than_seconds=older_than_seconds)

    def _touch(self, key: str) -> None:
        try:
            os.utime(self._path(key))
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def ping(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageUnavailable(f"cannot create store folder {self.root}: {exc.strerror}") from exc
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageUnavailable(f"store folder {self.root} is not writable")
