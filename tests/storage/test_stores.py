"""Behaviour every ObjectStore backend must share (the `store` fixture is a LocalStore and an S3Store)."""

import hashlib
import io
import os
import socket
import time
from pathlib import Path

import pytest

import storage.s3
from storage import (
    LocalStore,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    ObjectTooLarge,
    S3Store,
    StorageUnavailable,
    open_store,
    sweep_scratch_files,
)


class EndlessZeros(io.RawIOBase):
    """A stream that never ends, to prove put_stream stops reading once max_bytes is passed."""

    def __init__(self) -> None:
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        buffer[:] = bytes(len(buffer))
        self.bytes_read += len(buffer)
        return len(buffer)


def test_content_addressing_stores_one_object(store: ObjectStore) -> None:
    first = store.put_bytes("datasets", b"same content")
    second = store.put_stream("datasets/", io.BytesIO(b"same content"))
    digest = hashlib.sha256(b"same content").hexdigest()
    assert first == second == ObjectInfo(key=f"datasets/{digest}", sha256=digest, size=12)
    assert store.get_bytes(first.key) == b"same content"
    assert store.delete_prefix("datasets") == [first.key]


def test_put_at_overwrites(store: ObjectStore) -> None:
    store.put_at("jobs/1/checkpoint.safetensors", b"epoch 1")
    info = store.put_at("jobs/1/checkpoint.safetensors", b"epoch 2!")
    assert info == ObjectInfo("jobs/1/checkpoint.safetensors", hashlib.sha256(b"epoch 2!").hexdigest(), 8)
    assert store.get_bytes(info.key) == b"epoch 2!"


def test_read_paths_round_trip(store: ObjectStore) -> None:
    data = bytes(range(256)) * 5000  # 1.28 MB: more than one chunk
    info = store.put_bytes("blobs", data)
    assert store.exists(info.key)
    assert store.get_bytes(info.key) == data
    chunks = list(store.iter_chunks(info.key, chunk_size=500_000))
    assert [len(c) for c in chunks] == [500_000, 500_000, 280_000]


def test_large_stream_upload(store: ObjectStore) -> None:
    data = bytes(range(256)) * (80 * 1024)  # 20 MiB
    info = store.put_stream("big", io.BytesIO(data), max_bytes=len(data))
    assert info.size == len(data) and info.sha256 == hashlib.sha256(data).hexdigest()
    assert hashlib.sha256(b"".join(store.iter_chunks(info.key))).hexdigest() == info.sha256
    if isinstance(store, S3Store):  # a multipart upload's ETag ends in "-<number of parts>"
        head = store._client.head_object(Bucket=store.bucket, Key=info.key)
        assert head["ETag"].strip('"').endswith("-3")


def test_max_bytes_stops_reading_and_leaves_nothing(store: ObjectStore) -> None:
    stream = EndlessZeros()
    with pytest.raises(ObjectTooLarge) as caught:
        store.put_stream("uploads", io.BufferedReader(stream), max_bytes=2 << 20)
    assert caught.value.limit == 2 << 20
    assert stream.bytes_read < 4 << 20
    assert store.delete_prefix("uploads") == []
    if isinstance(store, LocalStore):
        assert not [p for p in store.root.rglob("*") if p.is_file()]


def test_missing_keys(store: ObjectStore) -> None:
    assert not store.exists("nope/missing")
    for read in (store.get_bytes, store.iter_chunks):
        with pytest.raises(ObjectNotFound) as caught:
            read("nope/missing")
        assert caught.value.key == "nope/missing"


def test_delete_and_delete_prefix(store: ObjectStore) -> None:
    keys = [store.put_at(f"run/7/theta_c/epoch{i}", b"x" * i).key for i in range(5)]
    store.put_at("run/7/curve.json", b"{}")
    store.put_at("run/70/other", b"keep")  # shares the string prefix "run/7" but not the folder
    store.delete(keys[0])
    store.delete(keys[0])  # deleting again is not an error
    assert not store.exists(keys[0])
    assert sorted(store.delete_prefix("run/7")) == sorted([*keys[1:], "run/7/curve.json"])
    assert not any(store.exists(k) for k in keys)
    assert store.get_bytes("run/70/other") == b"keep"
    assert store.delete_prefix("run/7") == []


@pytest.mark.parametrize("key", ["", "/abs/key", "a/../b", "..", "a\\b", "a//b", "a/./b", "trailing/"])
def test_bad_keys_rejected(store: ObjectStore, key: str) -> None:
    with pytest.raises(ValueError):
        store.put_at(key, b"x")
    with pytest.raises(ValueError):
        store.get_bytes(key)


def test_ping(store: ObjectStore) -> None:
    store.ping()


def test_s3_delete_prefix_pages_and_batches(s3_store: S3Store, monkeypatch: pytest.MonkeyPatch) -> None:
    # Small pages and batches exercise the same loops as 1000-key ones, without uploading thousands of keys.
    monkeypatch.setattr(storage.s3, "LIST_PAGE_SIZE", 5)
    monkeypatch.setattr(storage.s3, "DELETE_BATCH", 7)
    client = s3_store._client
    for i in range(23):
        client.put_object(Bucket=s3_store.bucket, Key=f"many/{i}", Body=b"")
    calls: list[int] = []
    delete_objects = client.delete_objects
    monkeypatch.setattr(
        client, "delete_objects", lambda **kw: calls.append(len(kw["Delete"]["Objects"])) or delete_objects(**kw)
    )
    assert sorted(s3_store.delete_prefix("many")) == sorted(f"many/{i}" for i in range(23))
    assert calls == [7, 7, 7, 2]
    assert client.list_objects_v2(Bucket=s3_store.bucket).get("KeyCount") == 0


def test_s3_prefix_is_applied(s3_endpoint: str, s3_store: S3Store) -> None:
    scoped = S3Store(s3_store.bucket, prefix="/tenant/a/", endpoint_url=s3_endpoint)
    info = scoped.put_bytes("models", b"weights")
    assert s3_store.get_bytes(f"tenant/a/{info.key}") == b"weights"


def test_ping_unreachable_s3_fails_fast(s3_endpoint: str) -> None:
    with socket.socket() as sock:  # a loopback port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = S3Store("bucket", endpoint_url=f"http://127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(StorageUnavailable, match="unreachable"):
        store.ping()
    assert time.monotonic() - started < 5


def test_ping_missing_bucket(s3_endpoint: str) -> None:
    with pytest.raises(StorageUnavailable, match="no-such-bucket"):
        S3Store("no-such-bucket", endpoint_url=s3_endpoint).ping()


def test_local_ping_unwritable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(StorageUnavailable):
        LocalStore(blocker / "store").ping()


def test_open_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    absolute = open_store(f"file://{tmp_path}/abs")
    relative = open_store("file://rel/dir")
    assert isinstance(absolute, LocalStore) and absolute.root == tmp_path / "abs"
    assert isinstance(relative, LocalStore) and relative.root == tmp_path / "rel" / "dir"
    s3 = open_store("s3://mcu-artifacts/prod/v1", s3_endpoint_url="http://127.0.0.1:9")
    assert isinstance(s3, S3Store) and (s3.bucket, s3.prefix) == ("mcu-artifacts", "prod/v1")
    assert open_store("s3://bucket").prefix == ""
    for bad in ("/plain/path", "http://x", "s3://", "file://", "gs://bucket"):
        with pytest.raises(ValueError, match="s3://bucket"):
            open_store(bad)


def test_the_sweeper_removes_scratch_files_left_by_a_killed_upload(tmp_path: Path) -> None:
    old, fresh, kept = tmp_path / "a" / ".tmp-abc.part", tmp_path / ".tmp-def.part", tmp_path / "a" / "data.bin"
    old.parent.mkdir()
    for path in (old, fresh, kept):
        path.write_bytes(b"x")
    an_hour_ago = time.time() - 3700
    os.utime(old, (an_hour_ago, an_hour_ago))
    os.utime(kept, (an_hour_ago, an_hour_ago))
    assert sweep_scratch_files(tmp_path, recursive=False) == 0  # the old one is in a subfolder
    assert sweep_scratch_files(tmp_path) == 1
    assert not old.exists() and fresh.exists() and kept.exists()  # a young one may be an upload in progress


def test_listing_names_finished_objects_and_a_reused_object_is_young_again(store: ObjectStore) -> None:
    """What the crash-leftover sweeper (worker/sweeper.py) relies on: a listing of the objects under a folder with
    their times, no scratch files in it, and a re-upload of existing content renewing the object's time.
    An object never reads older than it is (S3 cuts its stamps to whole seconds), or a sweep could take it."""
    written = time.time()
    first = store.put_bytes("shards", b"one")
    store.put_bytes("weights", b"two")
    store.put_at("requests/r1/theta_p", b"three")
    listed = {o.key: o.modified_at for o in store.list_objects("shards")}
    assert list(listed) == [first.key] and written <= listed[first.key] < time.time() + 60
    assert [o.key for o in store.list_objects("nothing-here")] == []
    time.sleep(1.1)  # S3 keeps whole seconds
    assert store.put_bytes("shards", b"one").key == first.key
    assert next(iter(store.list_objects("shards"))).modified_at > listed[first.key]


def test_an_object_swept_while_the_same_content_is_uploaded_is_stored_again(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweeper removes an old unreferenced object just after an upload of the same content found it: the upload
    stores it again instead of failing (seen as a 500 on POST /v1/datasets while a sweep ran)."""
    stored = store.put_bytes("shards", b"shared content")
    renew = store._touch

    def swept_first(key: str) -> None:
        store.delete(key)  # what the sweeper does between the upload's check and its renewal
        renew(key)

    monkeypatch.setattr(store, "_touch", swept_first)
    assert store.put_bytes("shards", b"shared content").key == stored.key
    assert store.get_bytes(stored.key) == b"shared content"


def test_incomplete_uploads_are_removed_only_once_old(store: ObjectStore) -> None:
    if isinstance(store, S3Store):
        upload = store._client.create_multipart_upload(Bucket=store.bucket, Key="shards/half")
        store._client.upload_part(
            Bucket=store.bucket, Key="shards/half", UploadId=upload["UploadId"], PartNumber=1, Body=b"x"
        )
    else:
        (store.root / "shards").mkdir(parents=True)
        (store.root / "shards" / ".tmp-half.part").write_bytes(b"x")
    assert store.sweep_incomplete(older_than_seconds=3600) == 0  # it may still be going on
    time.sleep(2.1)  # past the grace even where the stamp reads up to a second young
    assert store.sweep_incomplete(older_than_seconds=1) == 1
    assert store.sweep_incomplete(older_than_seconds=1) == 0


def test_making_a_scratch_file_sweeps_what_a_killed_process_left(tmp_path: Path) -> None:
    """An upload killed mid-way leaves its scratch file; the next one made in that folder (by an API or a
    worker that keeps running) removes it once it is old, not only a restart."""
    from storage.base import SWEEP_AFTER_SECONDS, TEMP_PREFIX, scratch_file

    old, young = tmp_path / f"{TEMP_PREFIX}killed.part", tmp_path / f"{TEMP_PREFIX}in-progress.part"
    for path in (old, young):
        path.write_bytes(b"half an upload")
    past = time.time() - SWEEP_AFTER_SECONDS - 60
    os.utime(old, (past, past))
    with scratch_file(tmp_path) as path:
        assert path.exists()
    assert not old.exists() and young.exists() and not path.exists()
