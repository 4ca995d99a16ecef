"""The broker's server restarts (a Redis of this test's own, keeping nothing on disk): the API and the worker
reconnect by themselves, and a request whose task the restart lost runs all the same (the reconciler)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from cli.digits import DigitsUpload
from tests.support import free_port, wait_for, wait_for_state

from .conftest import FAST_JOB, Stack, base_env, register, submit


class PrivateRedis:
    def __init__(self, directory: Path) -> None:
        self.port, self.directory, self.process = free_port(), directory, None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: self._pong(), 10, f"redis-server on port {self.port}")

    def _pong(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # no shutdown save: a crash, everything in it lost
            self.process.wait(timeout=10)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def test_a_broker_restart_loses_nothing(broker: PrivateRedis, tmp_path: Path, digits_upload: DigitsUpload) -> None:
    stack = Stack(base_env(tmp_path) | {"MCU_BROKER_URL": broker.url}, tmp_path)
    try:
        stack.start_api()
        stack.start_worker()
        with stack.client() as client:
            _, model_id = register(client, digits_upload)
            stack.kill_workers()
            lost = submit(client, model_id, forget={"classes": [1]}, config=FAST_JOB)
            assert wait_for(lambda: redis.Redis.from_url(broker.url).llen("gpu") > 0, 10, "the task in the queue")
            broker.stop()  # the restart loses the queued task
            broker.start()
            stack.start_worker()  # connects to the new server; its reconciler re-sends the lost request
            after = submit(client, model_id, forget={"classes": [2]}, config=FAST_JOB)  # the API reconnects too
            for request in (lost, after):
                assert wait_for_state(client, request["id"], ("awaiting_selection",), timeout=240)["curve"]
    finally:
        stack.stop()
