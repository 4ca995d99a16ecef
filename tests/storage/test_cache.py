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


def test_a_budget_evicts_the_least_recently_used_and_a_re_fetch_is_verified(store: ObjectStore, tmp_path: Path) -> None:
    a, b, c = (store.put_bytes("shards", bytes([k]) * 1000) for k in range(3))
    cache = LocalCache(tmp_path / "cache", store, budget_bytes=2500)
    path_a, path_b = cache.path(a.key, a.sha256), cache.path(b.key, b.sha256)
    with path_b.open("rb") as reader:  # an open reader of b ...
        assert cache.path(a.key, a.sha256) == path_a  # ... a used again: b is now the least recent
        cache.path(c.key, c.sha256)
        assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted([a.sha256, c.sha256])
        assert reader.read() == b"\x01" * 1000  # ... still reads what it opened
    store.delete(b.key)
    store.put_at(b.key, b"\x09" * 1000)  # fetched again, and verified: a changed object is refused
    with pytest.raises(StorageError, match="sha256"):
        cache.path(b.key, b.sha256)
    store.delete(b.key)
    store.put_at(b.key, b"\x01" * 1000)
    assert cache.path(b.key, b.sha256).read_bytes() == b"\x01" * 1000  # fetched again; a (least recent) left
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted([b.sha256, c.sha256])
