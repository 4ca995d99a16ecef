"""Crash leftovers are swept on both stores: the state a kill -9 of the API between storing an upload and
committing its row leaves (an object no row references, an incomplete S3 multipart upload, a scratch file)
is gone after a sweep, while an object within the grace period and every object a row references stay."""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from cli.digits import DigitsUpload
from migrations.runner import upgrade
from settings import Settings
from storage import ObjectStore, S3Store
from storage.base import TEMP_PREFIX
from tests.support import postgres_schema
from worker import sweeper
from worker.reconciler import start_reconciler
from worker.services import Services, connect
from worker.sweeper import referenced_keys, sweep

from .conftest import digits_service

GRACE_SECONDS = 2.0
AGED = GRACE_SECONDS + 1.5  # past the grace even for a store whose stamps read up to a second young


@pytest.fixture(params=["local", "s3", "postgres"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """The embedded default (SQLite, a folder), SQLite with S3, and the deployment's Postgres with S3: the
    object locks differ (SQLite's write lock, Postgres's advisory locks: models/objects.py)."""
    if request.param == "local":
        yield Settings(data_dir=tmp_path, bootstrap_api_key="k")
        return
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = f"sweep-{uuid.uuid4().hex[:12]}"
    S3Store(bucket, endpoint_url=endpoint).ensure_bucket()
    s3 = {"storage_url": f"s3://{bucket}/mcu", "s3_endpoint_url": endpoint}
    if request.param == "s3":
        yield Settings(data_dir=tmp_path, bootstrap_api_key="k", **s3)
        return
    with postgres_schema("mcu_sweep") as database_url:
        upgrade(database_url)
        yield Settings(data_dir=tmp_path, bootstrap_api_key="k", database_url=database_url, **s3)


def leave_crash_leftovers(services: Services) -> dict[str, object]:
    """What a killed upload leaves: the object stored but no row, and a half-written upload."""
    orphans = [
        services.store.put_bytes("shards", b"personal data " + os.urandom(8)).key,
        services.store.put_bytes("weights", b"weights " + os.urandom(8)).key,
    ]
    scratch = services.settings.data_dir / "cache" / f"{TEMP_PREFIX}killed.part"
    scratch.parent.mkdir(parents=True, exist_ok=True)
    scratch.write_bytes(b"half a download")
    if isinstance(services.store, S3Store):
        client, bucket = services.store._client, services.store.bucket
        upload = client.create_multipart_upload(Bucket=bucket, Key="mcu/shards/" + "0" * 64)
        client.upload_part(
            Bucket=bucket, Key="mcu/shards/" + "0" * 64, UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * 1024
        )
    return {"orphans": orphans, "scratch": scratch}


def incomplete_uploads(services: Services) -> list[str]:
    if not isinstance(services.store, S3Store):
        return []
    listed = services.store._client.list_multipart_uploads(Bucket=services.store.bucket)
    return [u["Key"] for u in listed.get("Uploads", [])]


def stored_keys(services: Services) -> set[str]:
    return {o.key for prefix in ("shards", "weights") for o in services.store.list_objects(prefix)}


def test_leftovers_go_young_and_referenced_objects_stay(settings: Settings, digits_upload: DigitsUpload) -> None:
    client, services, model_id = digits_service(settings, digits_upload)
    with services.factory() as session:
        referenced = referenced_keys(session)
    assert len(referenced) == 2  # the digits shard and the model's weights
    left = leave_crash_leftovers(services)
    reused = left["orphans"][0]
    assert incomplete_uploads(services) or not isinstance(services.store, S3Store)

    time.sleep(AGED)  # every leftover is now older than the grace period ...
    fresh = services.store.put_bytes("weights", b"an upload in progress").key  # ... this one is not
    assert services.store.put_bytes("shards", services.store.get_bytes(reused)).key == reused  # re-uploaded: young
    done = sweep(services, GRACE_SECONDS)

    assert stored_keys(services) == referenced | {fresh, reused}
    assert done["orphaned_objects"] == 1 and not left["scratch"].exists() and incomplete_uploads(services) == []
    if isinstance(services.store, S3Store):
        assert done["incomplete_uploads"] == 1
    weights = client.get(f"/v1/models/{model_id}/versions/1/weights")
    assert weights.status_code == 200 and weights.content == digits_upload.weights  # the referenced ones are whole

    time.sleep(AGED)  # the next sweep takes what is now old and unreferenced, nothing else
    sweep(services, GRACE_SECONDS)
    assert stored_keys(services) == referenced


def test_an_object_an_upload_reuses_while_the_sweeper_reads_the_rows_stays(
    settings: Settings, digits_upload: DigitsUpload, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An old unreferenced object, listed by the sweeper; while it reads the rows, an upload of the same content
    renews it (its row commits after the read). The sweeper must not delete it: that row would name nothing."""
    _, services, _ = digits_service(settings, digits_upload)
    content = b"the same shard, uploaded again " + os.urandom(8)
    key = services.store.put_bytes("shards", content).key
    time.sleep(AGED)
    read_rows = sweeper.referenced_keys

    def upload_meanwhile(session):
        assert services.store.put_bytes("shards", content).key == key
        return read_rows(session)

    monkeypatch.setattr(sweeper, "referenced_keys", upload_meanwhile)
    assert sweep(services, GRACE_SECONDS)["orphaned_objects"] == 0
    assert services.store.get_bytes(key) == content


def test_an_upload_that_reuses_the_object_the_sweeper_is_deleting_stores_it_again(
    settings: Settings, digits_upload: DigitsUpload, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweeper has read an old unreferenced shard's time and is about to delete it when an upload of the
    same content renews it (CI saw this: the dataset's row then named a deleted shard, and every read of it
    answered 404). The upload waits for the key's lock, finds the shard gone and stores it again."""
    client = TestClient(create_app(settings), headers={"Authorization": "Bearer k"})
    services = connect(settings)
    key = services.store.put_bytes("shards", digits_upload.shard).key  # what a killed upload left
    time.sleep(AGED)
    still_old = sweeper._still_old
    answers: list[httpx.Response] = []
    uploads: list[threading.Thread] = []

    def upload_before_the_delete(store: ObjectStore, key: str, cutoff: float) -> bool:
        old = still_old(store, key, cutoff)
        post = lambda: answers.append(client.post("/v1/datasets", data={"name": "d"}, files=digits_upload.files()))  # noqa: E731
        upload = threading.Thread(target=post)
        upload.start()
        upload.join(timeout=2)  # it renews the shard, then waits for the key's lock until the delete is done
        uploads.append(upload)
        return old

    monkeypatch.setattr(sweeper, "_still_old", upload_before_the_delete)
    assert sweep(services, GRACE_SECONDS)["orphaned_objects"] == 1  # deleted: it was old and unreferenced
    uploads[0].join(timeout=30)
    assert answers[0].status_code == 201, answers[0].text
    with services.factory() as session:
        assert key in referenced_keys(session)
    assert services.store.get_bytes(key) == digits_upload.shard  # stored again: the row names a whole shard


def test_the_reconciler_sweeps_periodically(tmp_path: Path, digits_upload: DigitsUpload) -> None:
    settings = Settings(
        data_dir=tmp_path,
        bootstrap_api_key="k",
        orphan_grace_seconds=GRACE_SECONDS,
        sweep_interval_seconds=0.5,
        reconcile_interval_seconds=0.2,
    )
    client = TestClient(create_app(settings), headers={"Authorization": "Bearer k"})
    assert client.post("/v1/datasets", data={"name": "digits"}, files=digits_upload.files()).status_code == 201
    services = connect(settings)
    with services.factory() as session:
        referenced = referenced_keys(session)
    left = leave_crash_leftovers(services)
    reconciler = start_reconciler(lambda: services, settings.reconcile_interval_seconds)
    try:
        deadline = time.monotonic() + 30
        while stored_keys(services) != referenced and time.monotonic() < deadline:
            time.sleep(0.2)
        assert stored_keys(services) == referenced and not left["scratch"].exists()
    finally:
        reconciler.stop()
    assert not reconciler.thread.is_alive()  # no round outlives the test (another file's listener would see it)


def test_an_upload_killed_after_its_object_was_stored_leaves_nothing_after_a_sweep(
    s3_endpoint: str, digits_upload: DigitsUpload, tmp_path: Path
) -> None:
    """The real crash: `mcu serve` on Postgres + S3 stores a dataset's shard, then waits for its row's insert
    (another transaction holds a lock that blocks writes to the dataset tables) and is killed with kill -9.
    The shard, personal data, is in the store with no row; the sweeper removes it."""
    import signal
    import subprocess
    import sys
    import threading

    import psycopg

    from migrations.runner import upgrade
    from tests.support import POSTGRES_ADMIN_URL, free_port, postgres_schema, wait_for

    bucket = f"kill-{uuid.uuid4().hex[:12]}"
    S3Store(bucket, endpoint_url=s3_endpoint).ensure_bucket()
    with postgres_schema("mcu_kill") as database_url:
        upgrade(database_url)
        settings = Settings(
            data_dir=tmp_path, database_url=database_url, storage_url=f"s3://{bucket}", s3_endpoint_url=s3_endpoint
        )
        services = connect(settings)
        port = free_port()
        env = {
            **os.environ,
            "MCU_DATA_DIR": str(tmp_path / "api"),
            "MCU_BOOTSTRAP_API_KEY": "k",
            "MCU_DATABASE_URL": database_url,
            "MCU_STORAGE_URL": f"s3://{bucket}",
            "MCU_S3_ENDPOINT_URL": s3_endpoint,
            "MCU_RATE_LIMIT_PER_KEY": "off",
        }
        api = subprocess.Popen(
            [sys.executable, "-m", "cli", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: _healthy(url), 60, "mcu serve to start", interval=0.2)
            schema = database_url.rsplit("%3D", 1)[1]
            with psycopg.connect(POSTGRES_ADMIN_URL.replace("postgresql+psycopg", "postgresql")) as blocker:
                blocker.execute(f"LOCK TABLE {schema}.datasets, {schema}.samples IN SHARE MODE")  # reads pass
                upload = threading.Thread(target=_post_dataset, args=(url, digits_upload), daemon=True)
                upload.start()
                wait_for(lambda: stored_keys(services), 60, "the shard to be stored", interval=0.05)
                os.kill(api.pid, signal.SIGKILL)  # before its row could be written
                api.wait(timeout=30)
                blocker.rollback()
        finally:
            if api.poll() is None:
                api.kill()
        (leftover,) = stored_keys(services)
        with services.factory() as session:
            assert leftover not in referenced_keys(session)  # the crash state: an object no row references
        time.sleep(1.1)  # S3's whole-second stamps read up to a second young (storage/s3.py)
        sweep(services, grace_seconds=0)
        assert stored_keys(services) == set() and incomplete_uploads(services) == []


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz").status_code == 200
    except httpx.TransportError:
        return False


def _post_dataset(url: str, upload: DigitsUpload) -> None:
    with contextlib.suppress(httpx.TransportError):  # the server is killed mid-request
        httpx.post(
            f"{url}/v1/datasets",
            data={"name": "digits"},
            files=upload.files(),
            headers={"Authorization": "Bearer k"},
            timeout=60,
        )
