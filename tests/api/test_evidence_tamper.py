"""Evidence that cannot be forged: one tamper test per attack, on both backends.

An insider who can write the database but does not hold the signing key truncates, deletes or re-chains a
succeeded request's audit trail: `mcu audit verify` exits non-zero naming the request and the fault, the
report route refuses to sign over the chain (409), and the next event does not launder it. A forger edits a
signed report: `mcu reports verify` exits non-zero naming what is wrong, and never trusts the key the report
carries. Requests go through the API; jobs run in this process (FAST, a tiny mlp).
"""

from __future__ import annotations

import base64
import copy
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from cli.main import app
from domain.signing import SigningKeys, key_id_of
from models import DeletionRequest, Event, record_event
from models.audit import canonical_json, event_hash
from tests.support import QUICK_EVIDENCE
from worker import jobs
from worker.services import connect

from .conftest import Service, assert_problem, upload_dataset, upload_model, validated

FAST = {"epochs": 1, "grid_points": 3, "base": {"epochs": 1}, "evidence": QUICK_EVIDENCE}


class Backend:
    """One validated model per backend; each call makes a new succeeded request (a train row of its own)."""

    def __init__(self, service: Service) -> None:
        self.service, self.services = service, connect(service.settings)
        self.model = validated(
            service, upload_model(service.client, upload_dataset(service.client, name="tamper").json()["id"])
        )
        self.next_row = 0

    def succeeded(self) -> str:
        self.next_row += 1
        response = self.service.client.post(
            "/v1/deletion-requests",
            json={
                "model_id": self.model["id"],
                "config": FAST,
                "selection": "auto",
                "forget": {"sample_ids": [f"s{self.next_row}"]},
            },
        )
        assert response.status_code == 202, response.text
        request_id = response.json()["id"]
        jobs.run_request(self.services, request_id)
        jobs.materialize_selection(self.services, request_id)
        assert self.service.client.get(f"/v1/deletion-requests/{request_id}").json()["state"] == "succeeded"
        return request_id

    def audit_verify(self, request_id: str) -> subprocess.CompletedProcess[str]:
        """`mcu audit verify` as an operator runs it, with the service's settings."""
        settings = self.service.settings
        env = (
            {k: v for k, v in os.environ.items() if not k.startswith("MCU_")}
            | {"MCU_DATA_DIR": str(settings.data_dir)}
            | ({"MCU_DATABASE_URL": settings.database_url} if settings.database_url else {})
        )
        return subprocess.run(
            [sys.executable, "-m", "cli", "audit", "verify", "--request-id", request_id],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )


@pytest.fixture(scope="module")
def backends() -> dict[str, Backend]:
    return {}


@pytest.fixture
def backend(service: Service, backends: dict[str, Backend]) -> Backend:
    if service.name not in backends:
        backends[service.name] = Backend(service)
    return backends[service.name]


def _events(session: Session, request_id: str) -> list[Event]:
    return list(session.scalars(select(Event).where(Event.request_id == request_id).order_by(Event.id)))


def _delete_newest(session: Session, request_id: str) -> None:
    session.delete(_events(session, request_id)[-1])


def _delete_chain(session: Session, request_id: str) -> None:
    session.execute(text("DELETE FROM events WHERE request_id = :id"), {"id": request_id})


def _set_anchor(session: Session, request_id: str, **values: object) -> None:
    session.execute(update(DeletionRequest).where(DeletionRequest.id == request_id).values(**values))


def _rechain(session: Session, request_id: str, drop: bool) -> None:
    """Edit (or drop) the second event, recompute every later hash and link, and the stored length and head:
    everything an attacker with the database can do, short of the seal."""
    events = _events(session, request_id)
    if drop:
        session.delete(events.pop(1))
    else:
        events[1].actor = "someone-else"
    prev = events[0].hash
    for event in events[1:]:
        event.prev_hash = prev
        event.hash = prev = event_hash(
            event.request_id, event.at, event.type, event.state, event.actor, event.detail, prev
        )
    session.flush()
    _set_anchor(session, request_id, chain_length=len(events), chain_head=prev)


def _truncate_and_unseal(session: Session, request_id: str) -> None:
    """Drop the newest event and the seal, posing as a chain from before migration 0008."""
    events = _events(session, request_id)
    session.delete(events[-1])
    _set_anchor(session, request_id, chain_length=len(events) - 1, chain_head=events[-2].hash, chain_seal=None)


def _reseal_with_own_key(session: Session, request_id: str) -> None:
    """Drop the newest event and seal the shorter chain with a key of the attacker's."""
    from models.audit import seal

    events = _events(session, request_id)
    session.delete(events[-1])
    length, head = len(events) - 1, events[-2].hash
    _set_anchor(
        session,
        request_id,
        chain_length=length,
        chain_head=head,
        chain_seal=seal(Ed25519PrivateKey.generate(), request_id, length, head),
    )


CHAIN_ATTACKS: dict[str, tuple[Callable[[Session, str], None], str]] = {
    "delete the newest event": (_delete_newest, "events were deleted or added"),
    "delete the whole chain": (_delete_chain, "has no events"),
    "edit a row, recompute every later hash and the stored head": (
        lambda s, r: _rechain(s, r, drop=False),
        "seal does not verify",
    ),
    "delete a row, recompute every later hash and the stored head": (
        lambda s, r: _rechain(s, r, drop=True),
        "seal does not verify",
    ),
    "delete the newest event and the seal": (_truncate_and_unseal, "not sealed"),
    "delete the newest event and seal with another key": (_reseal_with_own_key, "seal does not verify"),
}


@pytest.mark.parametrize("attack", CHAIN_ATTACKS)
def test_a_tampered_audit_chain_is_named_refused_a_report_and_not_laundered(backend: Backend, attack: str) -> None:
    tamper, fault = CHAIN_ATTACKS[attack]
    request_id = backend.succeeded()
    client = backend.service.client
    assert client.get(f"/v1/deletion-requests/{request_id}/report").status_code == 200
    assert backend.audit_verify(request_id).returncode == 0

    with backend.services.factory() as session, session.begin():
        tamper(session, request_id)
    for named in (fault, ""):  # then after the next event: extending a broken chain never re-seals it
        checked = backend.audit_verify(request_id)
        assert checked.returncode == 1, checked.stdout + checked.stderr
        assert f"BROKEN: request {request_id}" in checked.stderr and named in checked.stderr, checked.stderr
        body = assert_problem(client.get(f"/v1/deletion-requests/{request_id}/report"), 409, request_id, named)
        assert body["type"].endswith("/audit-chain-broken")
        with backend.services.factory() as session, session.begin():
            record_event(session, request_id, "callback_attempt", None, "worker", {"status": 200})


def test_untouched_chains_verify_across_a_key_rotation(backend: Backend) -> None:
    request_id = backend.succeeded()
    old = backend.service.client.get(f"/v1/deletion-requests/{request_id}/report").json()
    rotation = SigningKeys(backend.services.factory, backend.service.settings).rotate()
    assert rotation.key_id != old["signature"]["key_id"] and rotation.chains.sealed >= 1
    assert backend.audit_verify(request_id).returncode == 0  # re-sealed: the current key alone verifies it
    new = backend.service.client.get(f"/v1/deletion-requests/{request_id}/report")
    assert new.status_code == 200 and new.json()["signature"]["key_id"] == rotation.key_id


# --- forged reports: `mcu reports verify` ------------------------------------------------------------------


def _resigned(document: dict) -> bytes:
    """The report changed and signed again with the forger's key, embedded as if it were the service's."""
    forged = copy.deepcopy(document)
    forged["report"]["erasure_criterion"]["met"] = not forged["report"]["erasure_criterion"]["met"]
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes_raw()
    forged["signature"] |= {
        "key_id": key_id_of(raw),
        "public_key": base64.b64encode(raw).decode(),
        "value": base64.b64encode(key.sign(canonical_json(forged["report"]))).decode(),
    }
    return json.dumps(forged).encode()


def _duplicate_before(document: dict) -> bytes:
    """A forged `erasure_criterion` placed before the signed one: a parser that keeps the last checks the
    signed one, a reader that keeps the first sees the forgery."""
    signed = json.dumps(document["report"])
    forged = json.dumps({"met": True, "reasons": [], "tolerances": {}, "acknowledgement": None})
    return (
        '{"report": {"erasure_criterion": '
        + forged
        + ", "
        + signed[1:]
        + ', "signature": '
        + json.dumps(document["signature"])
        + "}"
    ).encode()


def _nested(depth: int) -> Callable[[dict], bytes]:
    def forge(document: dict) -> bytes:
        return (
            '{"report": ' + "[" * depth + "]" * depth + ', "signature": ' + json.dumps(document["signature"]) + "}"
        ).encode()

    return forge


REPORT_FORGERIES: dict[str, tuple[Callable[[dict], bytes], str]] = {
    "re-signed with another key": (_resigned, "is not among the trusted public keys"),
    "a duplicate key before the signed one": (_duplicate_before, "occurs twice"),
    "a duplicate key deep inside": (
        lambda d: json.dumps(d).replace('"met":', '"met": false, "met":', 1).encode(),
        "occurs twice",
    ),
    "deeply nested JSON": (_nested(100_000), "deep"),
    "nesting just past the bound": (_nested(70), "deep"),
    "a huge integer": (
        lambda d: json.dumps(d).replace('"report": {', '"report": {"n": 1' + "0" * 5000 + ",", 1).encode(),
        "an integer of 5001 digits",
    ),
    "an infinite number": (
        lambda d: json.dumps(d).replace('"report": {', '"report": {"n": 1e999,', 1).encode(),
        "must be a finite number",
    ),
    "an unknown envelope key": (lambda d: json.dumps(d | {"note": "trust me"}).encode(), "not a signed report"),
    "an unknown signature key": (
        lambda d: json.dumps(d | {"signature": d["signature"] | {"x": "y"}}).encode(),
        "the signature must be an object",
    ),
    "a lone surrogate": (
        lambda d: json.dumps(d).replace('"report": {', '"report": {"n": "\\ud800",', 1).encode(),
        "no canonical form",
    ),
    "not UTF-8": (lambda d: b"\xff" + json.dumps(d).encode(), "not UTF-8"),
}


@pytest.fixture
def signed(backend: Backend, tmp_path: Path) -> tuple[dict, Path]:
    """A real report and the service's published keys, saved as an auditor would."""
    if not hasattr(backend, "report"):
        backend.report = backend.service.client.get(  # type: ignore[attr-defined]
            f"/v1/deletion-requests/{backend.succeeded()}/report"
        ).json()
    keys = tmp_path / "keys.json"
    keys.write_text(backend.service.anonymous().get("/v1/signing-key").text)
    return backend.report, keys  # type: ignore[attr-defined]


def _reports_verify(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["reports", "verify", *map(str, args)], env={"MCU_URL": None})
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


@pytest.mark.parametrize("forgery", REPORT_FORGERIES)
def test_a_forged_report_fails_verification_naming_what_is_wrong(
    signed: tuple[dict, Path], tmp_path: Path, forgery: str
) -> None:
    document, keys = signed
    forge, fault = REPORT_FORGERIES[forgery]
    report = tmp_path / "report.json"
    report.write_text(json.dumps(document))
    assert _reports_verify(report, "--public-key", keys)[0] == 0
    report.write_bytes(forge(document))
    code, output = _reports_verify(report, "--public-key", keys)
    assert code == 1 and "INVALID" in output and fault in output, output
    assert "Traceback" not in output


def test_without_a_trusted_key_no_report_is_valid(signed: tuple[dict, Path], backend: Backend, tmp_path: Path) -> None:
    document, keys = signed
    report, forged = tmp_path / "report.json", tmp_path / "forged.json"
    report.write_text(json.dumps(document))
    forged.write_bytes(_resigned(document))
    for path in (report, forged):  # the genuine one too: the embedded key proves nothing about who signed
        code, output = _reports_verify(path)
        assert code == 3 and "UNTRUSTED" in output and "embedded" in output, output
    assert _reports_verify(report, "--public-key", keys)[0] == 0
    public = tmp_path / "current.b64"
    public.write_text(json.loads(keys.read_text())["current"]["public_key"])
    assert _reports_verify(report, "--public-key", public)[0] == 0
    assert _reports_verify(forged, "--public-key", public)[0] == 1
    assert [_reports_verify(path, "--url", backend.service.url)[0] for path in (report, forged)] == [0, 1]
