"""`mcu_client.verify_report` offline: the service's own signer (domain/signing.py) and the client's verifier
share `canonical_json`; the keys may come in each form a user holds them; the verdict is falsy when invalid."""

from __future__ import annotations

import base64
import copy
import json
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from domain.signing import Signer
from mcu_client import SigningKeys, Verification, verify_report
from mcu_client.evidence import key_id_of

REPORT = {"request": {"id": "req_1", "external_id": "GDPR-1 ü"}, "erasure_criterion": {"met": True}, "t": 0.85}


@pytest.fixture
def signed() -> tuple[dict, dict[str, str]]:
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes_raw()
    signer = Signer(key_id_of(raw), key)
    return signer.sign(copy.deepcopy(REPORT)), {signer.key_id: signer.public_key}


def published(trusted: dict[str, str]) -> dict:
    """GET /v1/signing-key's body for these keys (the first current)."""
    now = datetime.now(UTC).isoformat()
    keys = [
        {"key_id": k, "algorithm": "Ed25519", "public_key": v, "created_at": now, "retired_at": None}
        for k, v in trusted.items()
    ]
    return {"current": keys[0], "keys": keys}


def test_every_form_of_the_trusted_keys_verifies(signed: tuple[dict, dict[str, str]]) -> None:
    document, trusted = signed
    body = published(trusted)
    for keys in (trusted, body, SigningKeys.model_validate(body)):
        verdict = verify_report(document, keys)
        assert verdict == Verification(True, next(iter(trusted)), "signature valid") and verdict
    reread = json.loads(json.dumps(document, indent=2, ensure_ascii=True))  # a saved, re-indented copy
    assert verify_report(reread, trusted)


def test_any_change_is_invalid_and_falsy(signed: tuple[dict, dict[str, str]]) -> None:
    document, trusted = signed
    edits = {
        "a value": lambda d: d["report"]["erasure_criterion"].update(met=False),
        "a key added": lambda d: d["report"].update(extra=1),
        "a number's type": lambda d: d["report"].update(t=1),
    }
    for name, edit in edits.items():
        changed = copy.deepcopy(document)
        edit(changed)
        verdict = verify_report(changed, trusted)
        assert not verdict and "does not match the report" in verdict.reason, name
    other = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    assert (
        "not among the trusted" in verify_report(document, {key_id_of(other): base64.b64encode(other).decode()}).reason
    )
    wrong_id = {next(iter(trusted)): base64.b64encode(other).decode()}  # a trusted id with another key
    assert not verify_report(document, wrong_id)
    assert not verify_report({"report": REPORT}, trusted)


def test_a_saved_copy_is_read_strictly(signed: tuple[dict, dict[str, str]]) -> None:
    """Bytes or text are parsed here: a forged key placed before the signed one (json.load keeps the last value,
    another reader the first) is refused, and the untouched file verifies."""
    document, trusted = signed
    text = json.dumps(document)
    assert verify_report(text, trusted) and verify_report(text.encode(), trusted)
    forged = text.replace('"report": {', '"report": {"erasure_criterion": {"met": true, "forged": 1}, ', 1)
    verdict = verify_report(forged, trusted)
    assert not verdict and "appears twice" in verdict.reason
    assert not verify_report(b"[" * 100_000, trusted)  # nested past the parser's depth: a verdict, not a crash
