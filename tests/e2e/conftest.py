"""The whole service as real processes: `mcu serve` (uvicorn) and `mcu worker` (Celery) subprocesses on
Postgres, Redis and moto's S3 server, with short heartbeat and reconcile intervals so recovery is quick."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis

from cli.digits import DigitsUpload
from storage import S3Store
from tests.support import QUICK_EVIDENCE, free_port, postgres_schema, redis_url, wait_for, wait_model

REDIS_URL = redis_url("e2e")
WEBHOOK_SECRET = "whsec_" + "dGVzdC1zZWNyZXQtZm9yLWUyZS13ZWJob29rcw=="
FAST_JOB = {"epochs": 3, "grid_points": 5, "base": {"epochs": 4}, "evidence": QUICK_EVIDENCE}


@dataclass
class Stack:
    """API and worker processes sharing one environment; logs under `data_dir`."""

    env: dict[str, str]
    data_dir: Path
    url: str = ""
    key: str = field(default_factory=lambda: "e2e-" + secrets.token_hex(8))
    api: subprocess.Popen | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)
    started_workers: int = 0

    def _spawn(self, role: str, *args: str) -> subprocess.Popen:
        log = (self.data_dir / f"{role}.log").open("ab")
        env = self.env | {"MCU_BOOTSTRAP_API_KEY": self.key}
        return subprocess.Popen(
            [sys.executable, "-m", "cli", *args], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def start_api(self) -> None:
        port = free_port()
        self.api = self._spawn("api", "serve", "--port", str(port))
        self.url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _ready(self.url), 90, f"API at {self.url}; see {self.data_dir}/api.log")

    def start_worker(self) -> subprocess.Popen:
        self.started_workers += 1
        log = self.data_dir / f"worker-{self.started_workers}.log"
        worker = self._spawn(log.stem, "worker")
        self.workers.append(worker)
        wait_for(lambda: b" ready." in log.read_bytes() or worker.poll() is not None, 90, "worker start")
        assert worker.poll() is None, log.read_text()[-3000:]
        return worker

    def kill_workers(self, sig: int = signal.SIGKILL) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                os.killpg(worker.pid, sig)
                worker.wait(timeout=30)
        self.workers.clear()

    def stop(self) -> None:
        self.kill_workers(signal.SIGTERM)
        if self.api is not None and self.api.poll() is None:
            os.killpg(self.api.pid, signal.SIGTERM)
            self.api.wait(timeout=30)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=60)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def base_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCU_")}
    return env | {
        "MCU_DATA_DIR": str(data_dir),
        "MCU_DEVICE": "cpu",
        "MCU_HEARTBEAT_INTERVAL_SECONDS": "0.5",
        "MCU_HEARTBEAT_TIMEOUT_SECONDS": "4",
        "MCU_RECONCILE_INTERVAL_SECONDS": "1",
        "MCU_REQUEUE_AFTER_SECONDS": "3",
        "MCU_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "MCU_CALLBACK_ALLOWED_HOSTS": '["127.0.0.1:*"]',
        "OMP_NUM_THREADS": "1",
        "MCU_RATE_LIMIT_PER_KEY": "off",  # the tests poll every 0.1 s
    }


@pytest.fixture(scope="session")
def e2e_postgres_url() -> Iterator[str]:
    with postgres_schema("mcu_e2e") as url:
        yield url


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, e2e_postgres_url: str, s3_endpoint: str) -> Iterator[Stack]:
    """Postgres + Redis + S3, one API and one worker (tests may kill and restart workers)."""
    from migrations.runner import upgrade

    data_dir = tmp_path_factory.mktemp("e2e")
    bucket = f"e2e-{secrets.token_hex(6)}"
    S3Store(bucket, endpoint_url=s3_endpoint).ensure_bucket()
    redis.Redis.from_url(REDIS_URL).flushdb()
    upgrade(e2e_postgres_url)
    env = base_env(data_dir) | {
        "MCU_DATABASE_URL": e2e_postgres_url,
        "MCU_BROKER_URL": REDIS_URL,
        "MCU_STORAGE_URL": f"s3://{bucket}",
        "MCU_S3_ENDPOINT_URL": s3_endpoint,
    }
    yield from _running(Stack(env | aws_env(), data_dir))


def aws_env() -> dict[str, str]:
    """The dummy credentials and settings of the session's S3 server (tests/conftest.py `s3_endpoint`)."""
    names = (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_DEFAULT_REGION",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
    )
    return {name: os.environ[name] for name in names if name in os.environ}


@pytest.fixture(scope="session")
def embedded_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The embedded default: only MCU_DATA_DIR (SQLite, a local folder, the SQL broker)."""
    data_dir = tmp_path_factory.mktemp("embedded")
    yield from _running(Stack(base_env(data_dir), data_dir))


def own_stack(
    data_dir: Path, s3_endpoint: str, name: str, broker_url: str, settings: dict[str, str]
) -> Iterator[Stack]:
    """A running stack of its own (Postgres schema `mcu_e2e_<name>`, a bucket, the Redis database of
    `broker_url`, flushed), for tests whose service settings differ from the shared `stack`'s."""
    from migrations.runner import upgrade

    bucket = f"e2e-{name}-{secrets.token_hex(6)}"
    S3Store(bucket, endpoint_url=s3_endpoint).ensure_bucket()
    redis.Redis.from_url(broker_url).flushdb()
    with postgres_schema(f"mcu_e2e_{name}") as database_url:
        upgrade(database_url)
        env = base_env(data_dir) | {
            "MCU_DATABASE_URL": database_url,
            "MCU_BROKER_URL": broker_url,
            "MCU_STORAGE_URL": f"s3://{bucket}",
            "MCU_S3_ENDPOINT_URL": s3_endpoint,
        }
        yield from _running(Stack(env | settings | aws_env(), data_dir))


def _running(stack: Stack) -> Iterator[Stack]:
    try:
        stack.start_api()
        stack.start_worker()
        yield stack
    finally:
        stack.stop()


# --- the digits dataset and a model trained on it ----------------------------------------------------------


def register(client: httpx.Client, upload: DigitsUpload) -> tuple[str, str]:
    """A digits dataset and a trained cnn-small model on it, validated; returns (dataset_id, model_id)."""
    dataset_id = add_dataset(client, upload)
    return dataset_id, add_model(client, dataset_id, upload)


def add_dataset(client: httpx.Client, upload: DigitsUpload) -> str:
    dataset = client.post("/v1/datasets", data={"name": "digits"}, files=upload.files())
    assert dataset.status_code == 201, dataset.text
    return dataset.json()["id"]


def add_model(client: httpx.Client, dataset_id: str, upload: DigitsUpload) -> str:
    model = client.post(
        "/v1/models", data=upload.model_form(dataset_id), files={"weights": ("w.safetensors", upload.weights)}
    )
    assert model.status_code == 201, model.text
    return wait_model(client, model.json()["id"])["id"]


def submit(client: httpx.Client, model_id: str, **body: object) -> dict:
    response = client.post("/v1/deletion-requests", json={"model_id": model_id, **body})
    assert response.status_code == 202, response.text
    return response.json()
