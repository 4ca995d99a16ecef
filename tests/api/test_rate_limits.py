"""Rate limits per client address and per API key: a 429 problem with Retry-After, before the database;
counted in Redis when the broker is Redis, so two API processes share one budget."""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx
import pytest
import redis

from api.app import create_app
from settings import Settings
from tests.support import redis_url

from .conftest import serve

REDIS_DB = redis_url("rate-limits")


def start(tmp_path: Path, **limits: str) -> tuple[object, str]:
    settings = Settings(data_dir=tmp_path, bootstrap_api_key="k", **limits)
    server, _, url = serve(create_app(settings))
    return server, url


@pytest.fixture
def stop_servers() -> object:
    servers: list[object] = []
    yield servers
    for server in servers:
        server.should_exit = True  # type: ignore[attr-defined]


def test_an_address_over_its_limit_gets_429_with_retry_after(tmp_path: Path, stop_servers: list) -> None:
    server, url = start(tmp_path, rate_limit_per_address="5/minute", rate_limit_per_key="off")
    stop_servers.append(server)
    with httpx.Client(base_url=url) as client:
        statuses = [client.get("/v1/models").status_code for _ in range(5)]  # no key: 401, and counted
        refused = client.get("/v1/models", headers={"Authorization": "Bearer k"})
        probe = client.get("/healthz")
    assert statuses == [401] * 5
    assert refused.status_code == 429 and refused.headers["content-type"] == "application/problem+json"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert "per client address" in refused.json()["detail"]
    assert probe.status_code == 200  # probes are never limited


def test_each_key_has_its_own_budget(tmp_path: Path, stop_servers: list) -> None:
    server, url = start(tmp_path, rate_limit_per_address="off", rate_limit_per_key="3/minute")
    stop_servers.append(server)
    with httpx.Client(base_url=url) as client:
        first = [client.get("/v1/models", headers={"Authorization": "Bearer k"}).status_code for _ in range(4)]
        other = client.get("/v1/models", headers={"Authorization": "Bearer another"}).status_code
    assert first == [200, 200, 200, 429]
    assert other == 401  # a different key is counted apart (and then refused as unknown)


def test_replicas_share_the_count_in_redis_and_a_dead_store_fails_open(tmp_path: Path, stop_servers: list) -> None:
    redis.Redis.from_url(REDIS_DB).flushdb()
    shared = {
        "rate_limit_per_address": "4/minute",
        "rate_limit_per_key": "off",
        "rate_limit_storage_url": f"async+{REDIS_DB}",
    }
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    a, url_a = start(tmp_path / "a", **shared)
    b, url_b = start(tmp_path / "b", **shared)
    stop_servers.extend([a, b])
    statuses = [httpx.get(f"{url}/v1/models").status_code for url in (url_a, url_b, url_a, url_b, url_a, url_b)]
    assert statuses == [401, 401, 401, 401, 429, 429]

    (tmp_path / "c").mkdir()
    dead, url_dead = start(
        tmp_path / "c",
        rate_limit_per_address="1/minute",
        rate_limit_per_key="off",
        rate_limit_storage_url=f"async+redis://127.0.0.1:1/{secrets.randbelow(15)}",
    )
    stop_servers.append(dead)
    assert [httpx.get(f"{url_dead}/v1/models").status_code for _ in range(3)] == [401, 401, 401]


def test_a_malformed_limit_is_refused_with_the_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rate limit"):
        Settings(data_dir=tmp_path, rate_limit_per_address="lots")
    assert Settings(data_dir=tmp_path, rate_limit_per_key="off").rate_limit_per_key == "off"
