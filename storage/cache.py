"""A local folder of downloaded objects, so workers fetch θ_o and dataset shards once per host."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from pathlib import Path

from storage.base import TEMP_PREFIX, ObjectStore, StorageError, scratch_file

_SHA256 = re.compile(r"[0-9a-f]{64}")


class LocalCache:
    """Cache files are named by sha256 and appear by atomic rename, so other processes never see partial ones.

    With `budget_bytes`, fetching a file evicts the least recently used others (a file's mtime is its last use)
    until the cache holds at most the budget, or only the new file. A reader holding an open fd keeps reading an
    evicted file (Linux only unlinks the name); the next `path()` fetches and verifies it again."""

    def __init__(self, root: Path, store: ObjectStore, budget_bytes: int | None = None) -> None:
        self.root = Path(root)
        self.store = store
        self.budget_bytes = budget_bytes

    def path(self, key: str, sha256: str) -> Path:
        """A local file holding the object at `key`, whose content must hash to `sha256`."""
        if not _SHA256.fullmatch(sha256):
            raise ValueError(f"expected a lowercase hex sha256, got {sha256!r}")
        target = self.root / sha256
        if target.is_file():
            with contextlib.suppress(FileNotFoundError):  # evicted by another process meanwhile: fetched below
                os.utime(target)  # used now: the last to be evicted
                return target
        self.root.mkdir(parents=True, exist_ok=True)
        chunks = self.store.iter_chunks(key)
        with scratch_file(self.root) as tmp:
            digest = hashlib.sha256()
            with tmp.open("wb") as out:
                for chunk in chunks:
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if digest.hexdigest() != sha256:
                raise StorageError(f"object {key} has sha256 {digest.hexdigest()}, expected {sha256}")
            os.replace(tmp, target)
        self.evict(keep=target)
        return target

    def evict(self, keep: Path) -> None:
        """Delete least recently used files until the cache fits its budget (`keep`, just fetched, stays)."""
        if self.budget_bytes is None:
            return
        files = []
        for path in self.root.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if not path.name.startswith(TEMP_PREFIX):
                    stat = path.stat()
                    files.append((stat.st_mtime_ns, stat.st_size, path))
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self.budget_bytes:
                break
            if path != keep:
                path.unlink(missing_ok=True)
                total -= size

    def discard(self, sha256: str) -> None:
        """Drop the local copy of an object (deleted from the store: it must not outlive it here)."""
        if _SHA256.fullmatch(sha256):
            (self.root / sha256).unlink(missing_ok=True)

    def prune(self, live: set[str]) -> int:
        """Delete every cached copy whose sha256 is not in `live`; returns the count."""
        if not self.root.is_dir():
            return 0
        stale = [p for p in self.root.iterdir() if not p.name.startswith(TEMP_PREFIX) and p.name not in live]
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)
