"""Where the service will send a callback: allow-listed host and port, and never, through a DNS name, to
an address of its own network that the allow-list does not name."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pytest

from settings import Settings
from worker.callbacks import REFUSALS, post_pinned, vetted_address


def refusal(settings: Settings, url: str) -> str | None:
    return vetted_address(settings, url)[1]


@pytest.mark.parametrize(
    ("allowed", "url", "expected"),
    [
        (["hooks.example.com"], "https://hooks.example.com/x", True),
        (["hooks.example.com"], "https://hooks.example.com:8443/x", False),  # no port named: the default only
        (["hooks.example.com:*"], "https://hooks.example.com:8443/x", True),
        (["*.example.com"], "https://a.b.example.com/x", True),
        (["*.example.com"], "https://example.com.evil.org/x", False),
        (["127.0.0.1:9000"], "http://127.0.0.1:9000/x", True),
        (["127.0.0.1:9000"], "http://127.0.0.1:9001/x", False),
        (["example.com"], "http://example.com:99999/x", False),
        (["[::1]:9000"], "http://[::1]:9000/x", True),
        (["[::1]:9000"], "http://[::1]:9001/x", False),
    ],
)
def test_the_allow_list_matches_host_and_port(allowed: list[str], url: str, expected: bool) -> None:
    assert Settings(callback_allowed_hosts=allowed).callback_host_allowed(url) is expected


def test_a_name_that_resolves_to_loopback_is_refused_unless_the_address_is_allowed() -> None:
    # "localhost" resolves to 127.0.0.1 (and ::1): a name on the allow-list is not enough for it.
    by_name = Settings(callback_allowed_hosts=["localhost:*"])
    assert refusal(by_name, "http://localhost:9000/hook") == REFUSALS[1]
    by_address = Settings(callback_allowed_hosts=["localhost:*", "127.0.0.1:9000", "[::1]:9000"])
    assert refusal(by_address, "http://localhost:9000/hook") is None
    assert refusal(Settings(callback_allowed_hosts=["127.0.0.1:9000"]), "http://127.0.0.1:9000/hook") is None
    assert refusal(Settings(), "http://127.0.0.1:9000/hook") == REFUSALS[0]


def test_the_call_goes_to_the_address_vetted_not_to_a_second_dns_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: the name answers a public address when vetted and a loopback one a moment later. The
    call must go to the vetted address (unreachable here), never to the service on loopback."""
    hits: list[str] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            hits.append(self.headers["Host"])
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    answers = iter([[(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.10", port))]])  # TEST-NET-1, public

    def rebinding(host: str, *args: object, **kwargs: object) -> list:
        if host == "hooks.rebind.test":
            return next(answers, [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))])
        return real(host, *args, **kwargs)

    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    settings = Settings(callback_allowed_hosts=["hooks.rebind.test:*", "192.0.2.10:*"])
    url = f"http://hooks.rebind.test:{port}/hook"
    address, refused = vetted_address(settings, url)
    assert (address, refused) == ("192.0.2.10", None)
    with pytest.raises(httpx.HTTPError):  # 192.0.2.10 is unreachable here
        post_pinned(url, address, "{}", {"content-type": "application/json"})
    assert hits == []  # the second answer (loopback) was never used

    local = f"http://127.0.0.1:{port}/hook"  # and a pinned call does reach a vetted address, Host intact
    assert post_pinned(local, "127.0.0.1", "{}", {}).status_code == 204
    assert hits == [f"127.0.0.1:{port}"]
    server.shutdown()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9000/hook\r\nX-Injected: 1",
        "http://127.0.0.1:9000/ho\tok",
        "http://127.0.0.1:9000/\x00",
        "http://127.0.0.1:99999/hook",
        "ftp://127.0.0.1:9000/hook",
        "http:///hook",
    ],
)
def test_a_stored_malformed_callback_url_is_refused_recorded_and_never_resent(url: str, tmp_path: Path) -> None:
    """A URL stored before the API refused it fails every delivery: the attempt must still be recorded and the
    callback abandoned, not re-sent by every reconciler round."""
    from datetime import timedelta

    from fastapi.testclient import TestClient
    from sqlalchemy import update

    from api.app import create_app
    from models import Callback, DeletionRequest, utcnow
    from worker.callbacks import deliver
    from worker.reconciler import resend_callbacks
    from worker.services import connect
    from worker.validation import validate_model

    from ..api.conftest import upload_dataset, upload_model

    settings = Settings(
        data_dir=tmp_path,
        bootstrap_api_key="k",
        callback_allowed_hosts=["127.0.0.1:*"],
        broker_url="redis://127.0.0.1:1/0",
    )  # no broker: the outbox holds the callback
    client = TestClient(create_app(settings), headers={"Authorization": "Bearer k"})
    model_id = upload_model(client, upload_dataset(client).json()["id"]).json()["id"]
    services = connect(settings)
    validate_model(services, model_id)
    request_id = client.post(
        "/v1/deletion-requests",
        json={"model_id": model_id, "forget": {"sample_ids": ["s1"]}, "callback_url": "http://127.0.0.1:9000/hook"},
    ).json()["id"]
    with services.factory() as session, session.begin():  # as if stored before the strict input layer
        session.execute(update(DeletionRequest).where(DeletionRequest.id == request_id).values(callback_url=url))
    assert client.post(f"/v1/deletion-requests/{request_id}/cancel").json()["state"] == "cancelled"

    back = connect(settings.model_copy(update={"broker_url": None}))
    (message_id,) = resend_callbacks(back, utcnow() + timedelta(seconds=1))
    assert deliver(back.settings, back.factory, request_id, "cancelled", message_id) == (True, 1)  # refused
    with back.factory() as session:
        assert session.get(Callback, message_id).abandoned_at is not None
    attempts = [
        e
        for e in client.get(f"/v1/deletion-requests/{request_id}/events").json()["items"]
        if e["type"] == "callback_attempt"
    ]
    assert [a["detail"]["error"] for a in attempts] == [REFUSALS[2]]
    assert resend_callbacks(back, utcnow() + timedelta(hours=1)) == []


def test_a_resent_callback_continues_the_outbox_count_and_budget(tmp_path: Path) -> None:
    """Attempts are numbered by the outbox, not by Celery's retry count: after the reconciler re-sends a lost
    task, the audit trail goes on 1, 2, 3 (no repeated numbers) and the callback gets no fresh budget."""
    from datetime import timedelta

    from fastapi.testclient import TestClient

    from api.app import create_app
    from models import Callback, utcnow
    from worker.callbacks import deliver
    from worker.reconciler import resend_callbacks
    from worker.services import connect
    from worker.validation import validate_model

    from ..api.conftest import upload_dataset, upload_model

    class Failing(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            self.send_response(500)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings = Settings(
        data_dir=tmp_path,
        bootstrap_api_key="k",
        callback_allowed_hosts=["127.0.0.1:*"],
        callback_max_attempts=3,
        broker_url="redis://127.0.0.1:1/0",
    )  # no broker: the tasks are "lost", only the outbox remembers
    client = TestClient(create_app(settings), headers={"Authorization": "Bearer k"})
    model_id = upload_model(client, upload_dataset(client).json()["id"]).json()["id"]
    validate_model(connect(settings), model_id)
    hook = f"http://127.0.0.1:{server.server_address[1]}/hook"
    request_id = client.post(
        "/v1/deletion-requests",
        json={"model_id": model_id, "forget": {"sample_ids": ["s1"]}, "callback_url": hook},
    ).json()["id"]
    assert client.post(f"/v1/deletion-requests/{request_id}/cancel").json()["state"] == "cancelled"

    back = connect(settings.model_copy(update={"broker_url": None}))
    (message_id,) = resend_callbacks(back, utcnow() + timedelta(seconds=1))
    assert deliver(back.settings, back.factory, request_id, "cancelled", message_id) == (False, 1)
    assert deliver(back.settings, back.factory, request_id, "cancelled", message_id) == (False, 2)
    # The retry was lost with its worker; the reconciler sends the task again, as a new Celery task.
    assert resend_callbacks(back, utcnow() + timedelta(hours=1)) == [message_id]
    assert deliver(back.settings, back.factory, request_id, "cancelled", message_id) == (True, 3)  # the last one
    with back.factory() as session:
        owed = session.get(Callback, message_id)
        assert owed.attempts == 3 and owed.abandoned_at is not None and owed.delivered_at is None
    numbers = [
        e["detail"]["attempt"]
        for e in client.get(f"/v1/deletion-requests/{request_id}/events").json()["items"]
        if e["type"] == "callback_attempt"
    ]
    assert numbers == [1, 2, 3]
    assert resend_callbacks(back, utcnow() + timedelta(hours=2)) == []
    server.shutdown()
