"""A local folder of downloaded objects, so workers fetch θ_o and dataset shards once per host."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from storage.base import TEMP_PREFIX, ObjectStore, StorageError, scratch_file

_SHA256 = re.compile(r"[0-9a-f]{64}")


class LocalCache:
    """Cache files are named by sha256 and appear by atomic rename, so other processes never see partial ones."""

    def __init__(self, root: Path, store: ObjectStore) -> None:
        self.root = Path(root)
        self.store = store

    def path(self, key: str, sha256: str) -> Path:
        """A local file holding the object at `key`, whose content must hash to `sha256`."""
        if not _SHA256.fullmatch(sha256):
            raise ValueError(f"expected a lowercase hex sha256, got {sha256!r}")
        target = self.root / sha256
        if target.is_file():
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
        return target

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
