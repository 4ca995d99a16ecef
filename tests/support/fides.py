"""A real Fides (ethyca-fides 2.78.2 in `.venv-fides`, which `make install` builds) for the end-to-end test of the
integration: one uvicorn process on a free loopback port, configured by FIDES__* variables only, on its own
Postgres database `fides_test` (dropped and created again for each session) and a Redis database of its own
(`tests.support.redis_db`, flushed).
Celery runs eagerly inside the webserver, so no worker is needed; the policy webhook is called inside
`POST /privacy-request`. How it behaves: docs/integrations.md.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

from tests.support import free_port, redis_db, wait_for

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-fides"
DATABASE = "fides_test"
REDIS_DB = redis_db("fides")
CLIENT_ID, CLIENT_SECRET = "fidesadmin", "fidesadminsecret"
FINAL = {"complete", "error", "canceled", "denied"}  # a privacy request's statuses it never leaves


def fides_env(config_dir: Path) -> dict[str, str]:
    """Fides' settings: Postgres and Redis on loopback without passwords, tasks run in the webserver."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("FIDES__", "MCU_"))}
    return inherited | {
        "FIDES__CONFIG_PATH": str(config_dir / "no-fides.toml"),  # read no toml file
        "FIDES__DATABASE__SERVER": "127.0.0.1",
        "FIDES__DATABASE__PORT": "5432",
        "FIDES__DATABASE__USER": "postgres",
        "FIDES__DATABASE__PASSWORD": "",
        "FIDES__DATABASE__DB": DATABASE,
        "FIDES__DATABASE__AUTOMIGRATE": "true",
        "FIDES__DATABASE__API_ENGINE_POOL_SIZE": "5",  # its defaults open 50 + 50 connections
        "FIDES__DATABASE__TASK_ENGINE_POOL_SIZE": "5",
        "FIDES__DATABASE__TASK_ENGINE_MAX_OVERFLOW": "5",
        "FIDES__REDIS__HOST": "127.0.0.1",
        "FIDES__REDIS__PORT": "6379",
        "FIDES__REDIS__PASSWORD": "",  # its default, "testpassword", fails AUTH on a Redis without one
        "FIDES__REDIS__DB_INDEX": str(REDIS_DB),
        "FIDES__CELERY__TASK_ALWAYS_EAGER": "true",
        "FIDES__EXECUTION__REQUIRE_MANUAL_REQUEST_APPROVAL": "false",
        "FIDES__EXECUTION__SUBJECT_IDENTITY_VERIFICATION_REQUIRED": "false",
        "FIDES__EXECUTION__PRIVACY_REQUEST_DELAY_TIMEOUT": "3600",  # the reply-to token's lifetime, in minutes
        "FIDES__SECURITY__ENV": "prod",
        "FIDES__SECURITY__APP_ENCRYPTION_KEY": "localdevkey-0123456789abcdefghij",  # exactly 32 characters
        "FIDES__SECURITY__OAUTH_ROOT_CLIENT_ID": CLIENT_ID,
        "FIDES__SECURITY__OAUTH_ROOT_CLIENT_SECRET": CLIENT_SECRET,
        "FIDES__SECURITY__ROOT_USERNAME": "root_user",
        "FIDES__SECURITY__ROOT_PASSWORD": "Testpassword1!",
        "FIDES__SECURITY__AUTH_RATE_LIMIT": "1000/minute",  # 10/minute by default on /oauth/token
        "FIDES__USER__ANALYTICS_OPT_OUT": "true",
        "FIDES__DEV_MODE": "false",
    }


@dataclass
class Fides:
    """A started Fides; `wait_healthy` before the first call. `call` answers (status, JSON) on /api/v1."""

    url: str
    process: subprocess.Popen
    log: Path
    token: str = ""

    @property
    def api(self) -> str:
        return f"{self.url}/api/v1"

    def wait_healthy(self, timeout: float = 240) -> float:
        """Seconds waited; raises with the log's tail when Fides exits or stays unhealthy."""
        started = time.monotonic()
        while not self._healthy():
            if self.process.poll() is not None:
                raise RuntimeError(f"Fides exited ({self.process.returncode}): {self.log_tail()}")
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"Fides not healthy after {timeout:.0f}s: {self.log_tail()}")
            time.sleep(0.5)
        if not self.token:  # the root client's token (one per session: /oauth/token is rate-limited)
            status, body = self.call(
                "POST",
                "/oauth/token",
                data={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "grant_type": "client_credentials"},
            )
            assert status == 200, body
            self.token = body["access_token"]
        return time.monotonic() - started

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        # The webhook is called inside POST /privacy-request, so that call lasts as long as the webhook's answer.
        response = httpx.request(method, self.api + path, headers=headers, timeout=120, **kwargs)
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, response.text

    def status(self, privacy_request_id: str) -> str:
        """A privacy request's status as Fides reads it now (POST's answer shows it from before it ran)."""
        code, body = self.call("GET", "/privacy-request", params={"request_id": privacy_request_id})
        assert code == 200, body
        return body["items"][0]["status"]

    def wait_status(self, privacy_request_id: str, wanted: str, timeout: float = 60) -> None:
        """Until the privacy request is `wanted`; fails at once when it ends in another status."""
        seen = wait_for(
            lambda: (status := self.status(privacy_request_id)) in FINAL | {wanted} and status,
            timeout,
            f"privacy request {privacy_request_id} to be {wanted}",
            interval=0.5,
        )
        assert seen == wanted, f"privacy request {privacy_request_id} is {seen}, not {wanted}: {self.log_tail()}"

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else "(no log)"


def _recreate_database() -> None:
    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{DATABASE}"')


@contextlib.contextmanager
def fides_server(work_dir: Path) -> Iterator[Fides]:
    """Start Fides with `work_dir` as its working directory (its first migration writes CSV backups there) and
    yield it at once: it is healthy about 40 s later (migrations and seeding of an empty database), so the
    caller can do other work meanwhile. Stopped on exit."""
    python = VENV / "bin" / "python"
    if not python.exists():
        raise RuntimeError(f"{VENV} is missing: `make install` builds it (ethyca-fides, its own pins)")
    _recreate_database()
    redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).flushdb()
    port = free_port()
    log = work_dir / "fides.log"
    command = [python, "-m", "uvicorn", "fides.api.main:app", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*command, "--log-level", "warning"],
            cwd=work_dir,
            env=fides_env(work_dir),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield Fides(f"http://127.0.0.1:{port}", process, log)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
