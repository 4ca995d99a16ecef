import hashlib
from pathlib import Path

import pytest

from storage import LocalCache, ObjectStore, StorageError


def test_downloads_once(store: ObjectStore, tmp_path: Path) -> None:
    info = store.put_bytes("models", b"theta_o weights")
    cache = LocalCache(tmp_path / "cache", store)
    path = cache.path(info.key, info.sha256)
    assert path == tmp_path / "cache" / info.sha256
    assert path.read_bytes() == b"theta_o weights"
    store.delete(info.key)  # a second call must not need the store
    assert cache.path(info.key, info.sha256) == path
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [info.sha256]


def test_sha_mismatch_raises_and_caches_nothing(store: ObjectStore, tmp_path: Path) -> None:
    store.put_at("models/tampered", b"not what was promised")
    expected = hashlib.sha256(b"the real weights").hexdigest()
    cache = LocalCache(tmp_path / "cache", store)
    with pytest.raises(StorageError, match="sha256"):
        cache.path("models/tampered", expected)
    assert list((tmp_path / "cache").iterdir()) == []


def test_rejects_malformed_sha(local_store: ObjectStore, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        LocalCache(tmp_path, local_store).path("models/x", "../../etc/passwd")
