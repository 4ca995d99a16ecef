"""The API's protections before and around authentication, on real servers:

- a body is read only once its sender is authorized for the route, and never beyond MCU_MAX_REQUEST_BYTES;
- /metrics has bounded labels and a scrape flood costs the database one computation per few seconds;
- X-Forwarded-For names the client only when the peer is one of MCU_TRUSTED_PROXIES (`mcu serve`).
"""

from __future__ import annotations

import concurrent.futures
import os
import secrets
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import event

from api.app import create_app
from api.auth import create_api_key
from settings import Settings
from tests.support import free_port, wait_for

from .conftest import BOOTSTRAP_KEY, Service, serve

GIB = 1 << 30


def raw_request(url: str, head: str, body_chunks: Iterable[bytes] = (), wait: float = 10) -> tuple[int, int]:
    """Send `head` (request line and headers), then body chunks while the server has not answered; return the
    answer's status and how many body bytes went out before it came."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n")
        sent = 0
        for chunk in body_chunks:
            if select.select([sock], [], [], 0)[0]:  # the server answered: stop sending
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        answer = b""
        while b"\r\n" not in answer:  # the status line; a timeout here means the server is still reading
            answer += sock.recv(4096) or b"\r\n"
    return int(answer.split()[1]), sent


def head(path: str, length: int, key: str | None, content_type: str = "multipart/form-data; boundary=x") -> str:
    auth = f"Authorization: Bearer {key}\n" if key else ""
    return f"POST {path} HTTP/1.1\nHost: t\n{auth}Content-Type: {content_type}\nContent-Length: {length}\n"


@pytest.fixture(scope="module")
def models_reader(service: Service) -> str:
    with service.app.state.session_factory() as session, session.begin():  # type: ignore[attr-defined]
        _, secret = create_api_key(session, f"reader-{secrets.token_hex(4)}", ["models:read"])
    return secret


# (path, content type, key) -> the status, sent before a single byte of a 300 MB body
UNREAD = [
    ("/v1/datasets", "multipart/form-data; boundary=x", None, 401),
    ("/v1/models", "multipart/form-data; boundary=x", "mcu_not-a-key", 401),
    ("/v1/models", "multipart/form-data; boundary=x", "reader", 403),
    ("/v1/deletion-requests", "application/json", None, 401),
]


@pytest.mark.parametrize(("path", "content_type", "key", "status"), UNREAD)
def test_an_unauthorized_body_is_refused_before_it_is_read(
    service: Service, models_reader: str, path: str, content_type: str, key: str | None, status: int
) -> None:
    key = models_reader if key == "reader" else key
    answered, sent = raw_request(service.url, head(path, 300_000_000, key, content_type))
    assert (answered, sent) == (status, 0)


def test_a_declared_length_over_the_limit_is_refused_unread(service: Service) -> None:
    limit = service.settings.max_request_bytes
    assert raw_request(service.url, head("/v1/datasets", limit + 1, BOOTSTRAP_KEY)) == (413, 0)


def test_a_chunked_body_is_cut_off_at_the_limit(tmp_path: Path) -> None:
    limit = 1 << 20
    server, _, url = serve(create_app(Settings(data_dir=tmp_path, bootstrap_api_key="k", max_request_bytes=limit)))
    try:

        def chunk(data: bytes) -> bytes:
            return b"%x\r\n%s\r\n" % (len(data), data)

        part = b'--x\r\nContent-Disposition: form-data; name="manifest"; filename="m.csv"\r\n\r\n'
        status, sent = raw_request(
            url,
            "POST /v1/datasets HTTP/1.1\nHost: t\nAuthorization: Bearer k\n"
            "Content-Type: multipart/form-data; boundary=x\nTransfer-Encoding: chunked\n",
            [chunk(part)] + [chunk(b"x" * (64 << 10))] * 1024,
        )  # a 64 MiB file offered
        assert status == 413
        assert sent < 16 * limit  # the limit plus what socket buffers hold, not the 64 MiB
    finally:
        server.should_exit = True


# --- /metrics ---------------------------------------------------------------------------------------------


def test_metrics_labels_stay_bounded(service: Service) -> None:
    def made_up_requests(client: httpx.Client, count: int) -> None:
        for _ in range(count):
            client.request(f"X{secrets.token_hex(6)}", "/v1/models")
            client.get(f"/no/such/{secrets.token_hex(8)}")

    with service.anonymous() as client:
        made_up_requests(client, 1)  # the series of "other", "unmatched" and /metrics exist from here on
        client.get("/metrics")
        before = len(client.get("/metrics").content)
        made_up_requests(client, 300)
        grown = len(client.get("/metrics").content) - before
    assert grown < 1024, f"/metrics grew {grown} bytes after 600 made-up methods and paths"


def test_a_scrape_flood_costs_one_computation_and_slows_no_one(service: Service) -> None:
    statements = []
    engine = service.app.state.read_session_factory.kw["bind"]  # type: ignore[attr-defined]

    def listener(*_: object) -> None:
        statements.append(1)

    event.listen(engine, "before_cursor_execute", listener)

    def scrape(_: int) -> float:
        started = time.monotonic()
        assert scraper.get("/metrics").status_code == 200
        return time.monotonic() - started

    # 16 at a time, as the probe that exhausted the embedded broker's pool (every later scrape then took 30 s).
    # The bounds are loose: this process runs the server and its clients on one interpreter.
    try:
        with service.anonymous() as scraper, concurrent.futures.ThreadPoolExecutor(16) as pool:
            scrapes = pool.map(scrape, range(48))
            started = time.monotonic()
            assert service.client.get("/v1/models").status_code == 200
            authenticated = time.monotonic() - started
            slowest = max(scrapes)
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert authenticated < 5 and slowest < 10, (authenticated, slowest)
    # Four queries per computation, at most two computations (the flood may straddle SNAPSHOT_SECONDS), and the
    # authenticated GET's own; one computation per scrape would be 192.
    assert len(statements) <= 15, f"{len(statements)} statements for 48 scrapes"


def test_metrics_is_rate_limited_and_can_want_a_token(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, rate_limit_per_address="3/minute", metrics_token="scrape-secret")
    server, _, url = serve(create_app(settings))
    try:
        statuses = [
            httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer scrape-secret"}).status_code for _ in range(4)
        ]
        assert statuses == [200, 200, 200, 429]
    finally:
        server.should_exit = True
    server, _, url = serve(create_app(Settings(data_dir=tmp_path, metrics_token="scrape-secret")))
    try:
        assert httpx.get(f"{url}/metrics").status_code == 401
        assert httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    finally:
        server.should_exit = True


# --- X-Forwarded-For --------------------------------------------------------------------------------------


@pytest.fixture
def mcu_serve(tmp_path: Path) -> Iterator:
    """Start `mcu serve` (the real entry point, as the image runs it) with extra environment; stop it after."""
    processes: list[subprocess.Popen] = []

    def start(**env: str) -> str:
        port = free_port()
        environment = {
            **os.environ,
            "MCU_DATA_DIR": str(tmp_path / str(port)),
            "MCU_BOOTSTRAP_API_KEY": "k",
            "MCU_RATE_LIMIT_PER_KEY": "off",
            **env,
        }
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "cli", "serve", "--port", str(port)],
                env=environment,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(url), 60, "mcu serve to start", interval=0.2)
        return url

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz").status_code == 200
    except httpx.TransportError:
        return False


# trusted proxies -> (statuses of 6 requests from distinct forwarded addresses, then of 6 from one)
FORWARDED = [
    (None, ["401"] * 5 + ["429"], ["429"] * 6),  # ignored: every request counts for the peer, 127.0.0.1
    ('["127.0.0.1"]', ["401"] * 6, ["401"] * 5 + ["429"]),  # honoured: each forwarded client has its own budget
]


@pytest.mark.parametrize(("proxies", "distinct", "same"), FORWARDED)
def test_forwarded_for_is_honoured_only_from_a_trusted_proxy(
    mcu_serve: object, proxies: str | None, distinct: list[str], same: list[str]
) -> None:
    env = {"MCU_RATE_LIMIT_PER_ADDRESS": "5/minute"} | ({"MCU_TRUSTED_PROXIES": proxies} if proxies else {})
    url = mcu_serve(**env)  # type: ignore[operator]
    assert [
        str(httpx.get(f"{url}/v1/models", headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code) for i in range(6)
    ] == distinct
    assert [
        str(httpx.get(f"{url}/v1/models", headers={"X-Forwarded-For": "203.0.113.99"}).status_code) for _ in range(6)
    ] == same
