"""The API served by a real uvicorn on a loopback port, over two backends:

- `postgres`: the Postgres on 127.0.0.1:5432 (a fresh schema per test session, built by
  `alembic upgrade head`), Redis on 127.0.0.1:6379 as broker, and moto's S3 server;
- `sqlite`: the embedded default (SQLite file, local folder, serverless broker).
"""

from __future__ import annotations

import io
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn

from settings import Settings
from storage import S3Store, save_numpy
from tests.support import postgres_schema, redis_url, wait_for

REDIS_URL = redis_url("api")
BOOTSTRAP_KEY = "bootstrap-" + secrets.token_hex(8)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A schema of its own in the `test` database, so runs never see each other's rows."""
    with postgres_schema("mcu_test") as url:
        yield url


@dataclass
class Service:
    """A running API and what it talks to."""

    name: str
    url: str
    settings: Settings
    client: httpx.Client  # authenticated with the bootstrap key
    app: object

    def anonymous(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)

    def with_key(self, key: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, headers={"Authorization": f"Bearer {key}"})


def serve(app: object) -> tuple[uvicorn.Server, threading.Thread, str]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, "uvicorn to start", interval=0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, thread, f"http://127.0.0.1:{port}"


def backend_settings(name: str, tmp: Path, postgres_url: str, s3_endpoint: str) -> Settings:
    # The suite's own load (schemathesis, the concurrency tests) would trip the rate limits: off here, and
    # tested on their own in test_rate_limits.py.
    unlimited = {"rate_limit_per_address": "off", "rate_limit_per_key": "off"}
    if name == "sqlite":
        return Settings(data_dir=tmp, bootstrap_api_key=BOOTSTRAP_KEY, **unlimited)
    from migrations.runner import upgrade

    upgrade(postgres_url)
    bucket = f"mcu-{secrets.token_hex(6)}"
    S3Store(bucket, endpoint_url=s3_endpoint).ensure_bucket()
    return Settings(
        data_dir=tmp,
        database_url=postgres_url,
        broker_url=REDIS_URL,
        storage_url=f"s3://{bucket}",
        s3_endpoint_url=s3_endpoint,
        bootstrap_api_key=BOOTSTRAP_KEY,
        **unlimited,
    )


@pytest.fixture(scope="session", params=["postgres", "sqlite"])
def service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    from api.app import create_app

    name = request.param
    postgres_url = request.getfixturevalue("postgres_url") if name == "postgres" else ""
    s3_endpoint = request.getfixturevalue("s3_endpoint") if name == "postgres" else ""
    settings = backend_settings(name, tmp_path_factory.mktemp(name), postgres_url, s3_endpoint)
    app = create_app(settings)
    server, thread, url = serve(app)
    client = httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {BOOTSTRAP_KEY}"})
    try:
        yield Service(name, url, settings, client, app)
    finally:
        client.close()
        server.should_exit = True
        thread.join(timeout=10)


# --- small data builders -------------------------------------------------------------------------------


def shard_bytes(
    n: int, num_classes: int = 3, shape: tuple[int, ...] = (1, 4, 4), dtype: str = "uint8", seed: int = 0
) -> bytes:
    rng = np.random.default_rng(seed)
    inputs = rng.integers(0, 255, size=(n, *shape)).astype(dtype)
    labels = (np.arange(n) % num_classes).astype(np.int64)
    return save_numpy({"inputs": inputs, "labels": labels})


def manifest_bytes(rows: list[tuple[str, str, str, int, str | None]]) -> bytes:
    out = io.StringIO()
    out.write("sample_id,split,shard,row,subject_id\n")
    for sample_id, split, shard, row, subject in rows:
        out.write(f"{sample_id},{split},{shard},{row},{subject or ''}\n")
    return out.getvalue().encode()


def simple_manifest(n_train: int, n_test: int, shard: str = "a.safetensors", prefix: str = "s") -> bytes:
    rows = [
        (f"{prefix}{i}", "train" if i < n_train else "test", shard, i, f"subject{i % 7}")
        for i in range(n_train + n_test)
    ]
    return manifest_bytes(rows)


def upload_dataset(
    client: httpx.Client,
    n_train: int = 40,
    n_test: int = 20,
    num_classes: int = 3,
    name: str = "tiny",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return client.post(
        "/v1/datasets",
        data={"name": name},
        headers=headers or {},
        files=[
            ("manifest", ("manifest.csv", simple_manifest(n_train, n_test))),
            ("shards", ("a.safetensors", shard_bytes(n_train + n_test, num_classes))),
        ],
    )


def mlp_weights(num_classes: int = 3, shape: tuple[int, ...] = (1, 4, 4), seed: int = 0) -> bytes:
    from safetensors.torch import save

    from unlearning.architectures import seeded_init

    return save(seeded_init("mlp", num_classes, shape, seed).state_dict())


def upload_model(
    client: httpx.Client,
    dataset_id: str,
    weights: bytes | None = None,
    architecture: str = "mlp",
    num_classes: int = 3,
    headers: dict[str, str] | None = None,
    preprocessing: str = "unit",
) -> httpx.Response:
    return client.post(
        "/v1/models",
        headers=headers or {},
        data={
            "name": "tiny-mlp",
            "architecture": architecture,
            "num_classes": str(num_classes),
            "dataset_id": dataset_id,
            "preprocessing": preprocessing,
        },
        files={"weights": ("w.safetensors", weights if weights is not None else mlp_weights(num_classes))},
    )


def validated(service: Service, response: httpx.Response) -> dict:
    """The model of a registration (201, `validating`) once a worker's validation ran, in this process."""
    from worker.services import connect
    from worker.validation import validate_model

    assert response.status_code == 201, response.text
    assert response.json()["state"] == "validating"
    validate_model(connect(service.settings), response.json()["id"])
    return service.client.get(f"/v1/models/{response.json()['id']}").json()


@pytest.fixture(scope="session")
def registered(service: Service) -> dict[str, str]:
    """A dataset (40 train / 20 test, 3 classes) and a validated mlp model on it, registered once per backend."""
    dataset = upload_dataset(service.client)
    assert dataset.status_code == 201, dataset.text
    model = validated(service, upload_model(service.client, dataset.json()["id"]))
    assert model["state"] == "ready", model
    return {"dataset_id": dataset.json()["id"], "model_id": model["id"]}


def assert_problem(response: httpx.Response, status: int, *fragments: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert {"type", "title", "status", "detail"} <= set(body) and body["status"] == status
    for fragment in fragments:
        assert fragment in body["detail"] or fragment in str(body.get("errors")), (fragment, body)
    return body
