"""Dependencies that go away and come back, on servers of this test's own (the machine's shared Postgres and
the session's S3 server stay untouched):

- Postgres stopped under a running API: 503 problems with Retry-After within seconds, `/readyz` names the
  database; started again: the same API process answers 200 (its pool drops the dead connections).
- The S3 server stopped under a running API: uploads and downloads answer 503 problems with Retry-After (the
  request was fine; it can be sent again), `/readyz` names the store. A row naming an object the store lacks
  answers a problem that says so.
- The S3 server stopped before a job reads its data: the job fails with a problem naming the object store
  (after the client's bounded retries), not a hang.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from moto.server import ThreadedMotoServer

from api.app import create_app
from migrations.runner import upgrade
from settings import Settings
from storage import S3Store
from tests.support import free_port, wait_for
from worker import jobs
from worker.services import connect
from worker.validation import validate_model

from .conftest import assert_problem, serve, upload_dataset, upload_model

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None)


class PrivatePostgres:
    """A Postgres cluster in a temporary folder on a free port, run as the `postgres` user."""

    def __init__(self, root: Path) -> None:
        self.data, self.port = root / "data", free_port()
        root.mkdir(exist_ok=True)
        shutil.chown(root, "postgres")
        self._as_postgres(PG_BIN / "initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def _as_postgres(self, *command: object) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *map(str, command)], check=True, capture_output=True, timeout=120
        )

    def start(self) -> None:
        self._as_postgres(
            PG_BIN / "pg_ctl",
            "-D",
            self.data,
            "-w",
            "-l",
            self.data / "log",
            "start",
            "-o",
            f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off",
        )

    def stop(self) -> None:
        self._as_postgres(PG_BIN / "pg_ctl", "-D", self.data, "-w", "-m", "fast", "stop")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    if PG_BIN is None or os.geteuid() != 0:
        pytest.skip("needs Debian's PostgreSQL binaries and root (to run them as the postgres user)")
    pwd.getpwnam("postgres")
    root = Path(tempfile.mkdtemp(prefix="mcu-pg-"))  # not under pytest's root-only temp folder
    server = PrivatePostgres(root)
    server.start()
    try:
        yield server
    finally:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(server.data),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)


def test_postgres_stopped_gives_503_and_recovers_without_a_restart(
    private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    upgrade(private_postgres.url)
    settings = Settings(
        data_dir=tmp_path,
        database_url=private_postgres.url,
        bootstrap_api_key="k",
        rate_limit_per_address="off",
        rate_limit_per_key="off",
    )
    server, _, url = serve(create_app(settings))
    client = httpx.Client(base_url=url, headers={"Authorization": "Bearer k"}, timeout=30)
    try:
        assert client.get("/v1/models").status_code == 200

        private_postgres.stop()
        started = time.monotonic()
        down = client.get("/v1/models")
        assert down.status_code == 503 and down.headers["content-type"] == "application/problem+json"
        assert down.headers["retry-after"] == "2" and time.monotonic() - started < 10
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "database" in ready.json()["detail"]
        submit = client.post("/v1/deletion-requests", json={"model_id": "mdl_x", "forget": {"classes": [1]}})
        assert submit.status_code == 503

        private_postgres.start()
        assert wait_for(lambda: client.get("/v1/models").status_code == 200, 30, "the API to reach Postgres again")
        assert client.get("/readyz").status_code == 200
    finally:
        client.close()
        server.should_exit = True


def private_moto() -> tuple[ThreadedMotoServer, str]:
    """A moto S3 server of the test's own, to stop: the session's (`s3_endpoint`) lends only its dummy credentials."""
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    return moto, f"http://{host}:{port}"


def test_an_object_store_outage_answers_503_and_a_missing_object_is_named(tmp_path: Path, s3_endpoint: str) -> None:
    moto, endpoint = private_moto()
    store = S3Store("api-outage", endpoint_url=endpoint)
    store.ensure_bucket()
    settings = Settings(
        data_dir=tmp_path, bootstrap_api_key="k", storage_url="s3://api-outage", s3_endpoint_url=endpoint
    )
    client = TestClient(create_app(settings), headers={"Authorization": "Bearer k"})
    try:
        dataset_id = upload_dataset(client).json()["id"]
        model = upload_model(client, dataset_id).json()
        weights = f"/v1/models/{model['id']}/versions/1/weights"
        assert client.get(weights).status_code == 200

        key = next(obj.key for obj in store.list_objects("weights"))
        store.delete(key)  # what the object locks prevent (docs/design.md): a row naming a deleted object
        missing = assert_problem(client.get(weights), 500, "stored object of this resource is missing")
        assert missing["type"].endswith("/artifact-missing")
    finally:
        moto.stop()

    started = time.monotonic()
    for response in (upload_dataset(client, name="later"), upload_model(client, dataset_id), client.get(weights)):
        assert_problem(response, 503, "object store is unavailable")
        assert response.headers["retry-after"] == "5"
    assert time.monotonic() - started < 60  # the client's bounded retries, not a hang
    assert "object store" in assert_problem(client.get("/readyz"), 503)["detail"]


def test_a_job_whose_object_store_is_gone_fails_with_a_clear_problem(tmp_path: Path, s3_endpoint: str) -> None:
    moto, endpoint = private_moto()
    S3Store("outage", endpoint_url=endpoint).ensure_bucket()
    settings = Settings(data_dir=tmp_path, bootstrap_api_key="k", storage_url="s3://outage", s3_endpoint_url=endpoint)
    client = TestClient(create_app(settings), headers={"Authorization": "Bearer k"})
    services = connect(settings)
    model_id = upload_model(client, upload_dataset(client).json()["id"]).json()["id"]
    validate_model(services, model_id)
    shutil.rmtree(settings.cache_dir, ignore_errors=True)  # the job must read its shards from the store
    request_id = client.post(
        "/v1/deletion-requests",
        json={
            "model_id": model_id,
            "forget": {"sample_ids": ["s1"]},
            "config": {"epochs": 1, "grid_points": 3, "base": {"epochs": 1}},
        },
    ).json()["id"]
    moto.stop()

    started = time.monotonic()
    jobs.run_request(services, request_id)
    request = client.get(f"/v1/deletion-requests/{request_id}").json()
    assert request["state"] == "failed" and time.monotonic() - started < 60
    assert request["error"]["type"].endswith("/storage-unavailable")
    assert request["error"]["title"] == "The object store could not be reached" and "S3" in request["error"]["detail"]
