"""The Fides integration's contract (domain/fides.py, worker/fides.py): the policy webhook as Fides 2.78 calls it
(headers and body as captured from a real Fides: tests/e2e/test_fides.py runs one), and the resume the service owes
afterwards, against a stand-in for Fides' resume endpoint that answers as Fides does (200, 403 for an expired token,
400 once the request moved on)."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from domain.fides import subject_id
from models import FidesResume
from worker import fides as fides_worker
from worker import jobs
from worker.services import connect

from .conftest import Service, assert_problem, manifest_bytes, shard_bytes, upload_model, validated

TRAIN, TEST = 30, 10


@dataclass
class FakeFides:
    """Answers each resume with the next status of `answers` (200 once they run out); records every call."""

    url: str = ""
    answers: list[tuple[int, dict]] = field(default_factory=list)
    calls: list[dict] = field(default_factory=list)


@pytest.fixture
def fake_fides() -> Iterator[FakeFides]:
    fake = FakeFides()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            fake.calls.append({"path": self.path, "authorization": self.headers["authorization"], "body": body})
            status, answer = fake.answers.pop(0) if fake.answers else (200, {"status": "in_processing"})
            payload = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/api/v1"
    yield fake
    server.shutdown()


@pytest.fixture
def configured(service: Service, fake_fides: FakeFides, monkeypatch: pytest.MonkeyPatch) -> Service:
    monkeypatch.setattr(service.settings, "fides_url", fake_fides.url)
    monkeypatch.setattr(fides_worker, "CLAIM_SECONDS", 0)  # retries in one test, not a minute apart
    return service


@pytest.fixture(scope="module")
def people(service: Service) -> dict[str, str]:
    """Emails whose subject ids a model's training rows carry (every sixth row each), and the model."""
    tag = secrets.token_hex(4)
    names = ("alice", "bob", "carol", "dave", "erin", "frank")  # each test erases its own people
    emails = [f"{tag}-{name}@example.com" for name in names]
    subjects = [subject_id(e, service.settings) for e in emails]
    rows = [
        (f"{tag}-f{i}", "train" if i < TRAIN else "test", "x.safetensors", i, subjects[i % 6] if i < TRAIN else None)
        for i in range(TRAIN + TEST)
    ]
    response = service.client.post(
        "/v1/datasets",
        data={"name": "fides"},
        files=[("manifest", ("m.csv", manifest_bytes(rows))), ("shards", ("x.safetensors", shard_bytes(TRAIN + TEST)))],
    )
    assert response.status_code == 201, response.text
    model = validated(service, upload_model(service.client, response.json()["id"]))["id"]
    return dict(zip(names, emails, strict=True)) | {"model": model}


def hook(email: str | None, privacy_request_id: str, **overrides: object) -> dict:
    """A webhook body as Fides 2.78 sends it (less the privacy request's own copy, which is ignored)."""
    return {
        "privacy_request_id": privacy_request_id,
        "privacy_request_status": "in_processing",
        "direction": "two_way",
        "callback_type": "pre",
        "identity": {"phone_number": None, "email": email, "ga_client_id": None, "external_id": None},
        "policy_action": "erasure",
        "privacy_request": {"id": privacy_request_id, "status": "in_processing", "policy": {"key": "x"}},
        "timestamp": "2026-12-03T06:44:22.507061",
    } | overrides


def call(service: Service, body: dict, token: str = "tok-1", reply_to: str | None = None) -> dict:
    headers = {"reply-to-token": token, "reply-to": reply_to or f"/privacy-request/{body['privacy_request_id']}/resume"}
    response = service.client.post("/v1/integrations/fides/webhook", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def erasure_of(service: Service, privacy_request_id: str) -> list[dict]:
    return service.client.get("/v1/erasures", params={"external_id": f"fides:{privacy_request_id}"}).json()["items"]


def owed(service: Service, privacy_request_id: str) -> FidesResume:
    with connect(service.settings).factory() as session:
        row = session.get(FidesResume, privacy_request_id)
        assert row is not None
        session.expunge(row)
        return row


def succeed(service: Service, erasure: dict) -> None:
    """Each request of the erasure through its job to succeeded, in this process (any point will do)."""
    services = connect(service.settings)
    for filed in erasure["requests"]:
        jobs.run_request(services, filed["id"])
        selected = service.client.post(
            f"/v1/deletion-requests/{filed['id']}/selection",
            json={"t": 1.0, "acknowledge": "erasure criterion not met: a test of the Fides outbox"},
        )
        assert selected.status_code == 202, selected.text
        jobs.materialize_selection(services, filed["id"])


def test_a_held_subject_is_erased_and_fides_resumed_once_the_erasure_succeeded(
    configured: Service, people: dict[str, str], fake_fides: FakeFides
) -> None:
    pri = "pri_" + secrets.token_hex(6)
    assert call(configured, hook(people["alice"], pri), token="tok-alice") == {"halt": True}
    (erasure,) = erasure_of(configured, pri)
    assert [r["model_id"] for r in erasure["requests"]] == [people["model"]]
    # Fides calling again (a requeued privacy request) files nothing new and keeps the newest token.
    assert call(configured, hook(people["alice"], pri), token="tok-alice-2") == {"halt": True}
    assert len(erasure_of(configured, pri)) == 1 and owed(configured, pri).token == "tok-alice-2"

    services = connect(configured.settings)
    assert fides_worker.resume_owed(services) == [] and fake_fides.calls == []  # not before it succeeded
    succeed(configured, erasure)
    assert fides_worker.resume_owed(services) == [pri]
    (resume,) = fake_fides.calls
    assert resume == {
        "path": f"/api/v1/privacy-request/{pri}/resume",
        "authorization": "Bearer tok-alice-2",
        "body": {"derived_identity": {}},
    }
    row = owed(configured, pri)
    assert row.resumed_at is not None and row.token is None and row.outcome == "resumed"
    assert fides_worker.resume_owed(services) == [] and len(fake_fides.calls) == 1  # once
    # Her next privacy request finds every row erased already: nothing to wait for.
    assert call(configured, hook(people["alice"], "pri_" + secrets.token_hex(6))) == {"halt": False}


def test_an_expired_token_or_a_failed_fides_is_recorded_not_raised(
    configured: Service, people: dict[str, str], fake_fides: FakeFides
) -> None:
    services = connect(configured.settings)
    for email in (people["bob"], people["carol"]):
        pri = "pri_" + secrets.token_hex(6)
        assert call(configured, hook(email, pri)) == {"halt": True}
        succeed(configured, erasure_of(configured, pri)[0])
    # Fides answers the round's first call "expired", its second a 500 (whichever privacy request comes first).
    fake_fides.answers = [(403, {"detail": "Webhook token expired"}), (500, {"detail": "oops"})]
    fides_worker.resume_owed(services)
    expired, failed = (call["path"].split("/")[-2] for call in fake_fides.calls)
    assert owed(configured, expired).abandoned_at is not None and "403" in owed(configured, expired).outcome
    assert owed(configured, expired).token is None
    retried = owed(configured, failed)
    assert retried.resumed_at is None and retried.abandoned_at is None and retried.attempts == 1
    assert fides_worker.resume_owed(services) == [failed]  # the next round: 200
    assert owed(configured, failed).resumed_at is not None and len(fake_fides.calls) == 3


def test_a_cancelled_erasure_leaves_the_privacy_request_paused(
    configured: Service, people: dict[str, str], fake_fides: FakeFides
) -> None:
    pri = "pri_" + secrets.token_hex(6)
    assert call(configured, hook(people["dave"], pri)) == {"halt": True}
    for filed in erasure_of(configured, pri)[0]["requests"]:
        assert configured.client.post(f"/v1/deletion-requests/{filed['id']}/cancel").status_code == 202
    assert fides_worker.resume_owed(connect(configured.settings)) == [pri]
    assert fake_fides.calls == []  # resuming would let Fides call the privacy request complete
    assert owed(configured, pri).outcome == "not resumed: the erasure cancelled"


def test_what_the_webhook_does_not_erase(configured: Service, people: dict[str, str]) -> None:
    nobody = "pri_" + secrets.token_hex(6)
    assert call(configured, hook("nobody@example.com", nobody)) == {"halt": False}  # no model holds them
    assert erasure_of(configured, nobody) == []
    access = "pri_" + secrets.token_hex(6)
    assert call(configured, hook(people["alice"], access, policy_action="access")) == {"halt": False}
    assert call(configured, hook(people["alice"], access, direction="one_way")) == {"halt": False}
    assert erasure_of(configured, access) == []


def test_bad_webhook_calls_are_problems(configured: Service, people: dict[str, str]) -> None:
    client, pri = configured.client, "pri_" + secrets.token_hex(6)
    url = "/v1/integrations/fides/webhook"
    headers = {"reply-to": f"/privacy-request/{pri}/resume", "reply-to-token": "t"}
    assert_problem(client.post(url, json=hook(None, pri), headers=headers), 422, "no email")
    for reply_to in ("http://elsewhere/privacy-request/x/resume", "/privacy-request/../../oauth/resume", ""):
        bad = client.post(url, json=hook(people["alice"], pri), headers={**headers, "reply-to": reply_to})
        assert_problem(bad, 422, "reply-to")
    assert_problem(client.post(url, json={"identity": {}}, headers=headers), 422)
    assert_problem(configured.anonymous().post(url, json=hook(people["alice"], pri), headers=headers), 401)
    assert erasure_of(configured, pri) == []


def test_the_webhook_is_off_without_a_fides_url(service: Service, people: dict[str, str]) -> None:
    response = service.client.post(
        "/v1/integrations/fides/webhook",
        json=hook(people["alice"], "pri_off"),
        headers={"reply-to": "/privacy-request/pri_off/resume", "reply-to-token": "t"},
    )
    assert_problem(response, 404, "MCU_FIDES_URL")
