"""Checking a signed proof-of-erasure report: `verify_report(document, public_keys)`, without the server.

A signed report is `{"report": {...}, "signature": {"algorithm", "key_id", "public_key", "value"}}`: an
Ed25519 signature over `canonical_json(report)`. The service signs (domain/signing.py) and hashes its audit
chains (models/audit.py) with this module's `canonical_json`, so signer and verifier share one definition,
and `mcu reports verify` calls `verify_report`: there is one verifier.

Ed25519 comes from the `cryptography` package, an extra of this distribution: `pip install
'mcu-client[verify]'` (from a checkout: `pip install './mcu_client[verify]'`). It is imported when a report is
verified, so the client alone still needs only httpx and pydantic.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mcu_client.errors import McuError
from mcu_client.types import SigningKeys

ALGORITHM = "Ed25519"
ENVELOPE_KEYS, SIGNATURE_KEYS = {"report", "signature"}, {"algorithm", "key_id", "public_key", "value"}


class MissingExtra(McuError, ImportError):
    """`cryptography` is not installed: verifying needs the `verify` extra."""


def canonical_json(value: Any) -> bytes:
    """One byte string per value: sorted keys, no spaces, UTF-8. What hashes and signatures are taken over.
    ValueError (or UnicodeEncodeError) for a value that has none: NaN, infinities, a lone surrogate."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def key_id_of(public_raw: bytes) -> str:
    """A key's id: the first 16 hex digits of the sha256 of its raw 32 public bytes."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


@dataclass(frozen=True)
class Verification:
    """The verdict: `ok`, the key id the report names (None when it names none) and why, in words. Truthy only
    when the signature is valid, so `if verify_report(...):` reads right."""

    ok: bool
    key_id: str | None
    reason: str

    def __bool__(self) -> bool:
        return self.ok


def _ed25519() -> tuple[Any, type[Exception]]:
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    except ImportError as error:
        raise MissingExtra(
            "verifying a report needs the `cryptography` package: pip install 'mcu-client[verify]' "
            "(from a checkout: pip install './mcu_client[verify]')"
        ) from error
    return Ed25519PublicKey, InvalidSignature


def trusted_mapping(public_keys: SigningKeys | Mapping[str, Any]) -> dict[str, Any]:
    """key id -> base64 public key, from `Client.signing_keys()`, the parsed JSON of GET /v1/signing-key, or
    such a mapping itself."""
    if isinstance(public_keys, SigningKeys):
        return public_keys.trusted()
    if isinstance(public_keys.get("keys"), list):
        keys = [key for key in public_keys["keys"] if isinstance(key, Mapping) and isinstance(key.get("key_id"), str)]
        return {key["key_id"]: key.get("public_key") for key in keys}
    return dict(public_keys)


def _strict(text: bytes | str) -> Any:
    """A saved report's JSON, refusing any key given twice in one object: `json.load` keeps the last value, and
    another reader of the same file may show the first, so a forged key put beside a signed one must not pass."""

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        if len(set(keys)) != len(keys):
            raise ValueError(f"key {next(k for k in keys if keys.count(k) > 1)!r} appears twice in one object")
        return dict(pairs)

    return json.loads(text, object_pairs_hook=unique)


def verify_report(document: Any, public_keys: SigningKeys | Mapping[str, Any]) -> Verification:
    """Check a signed report against trusted keys: `Client.signing_keys()`, GET /v1/signing-key's JSON, or {key id:
    base64 public key}. `document` is the report as `Client.report` returns it, or a saved copy's bytes or text
    (parsed strictly here: pass those rather than `json.load`'s result). The key embedded in the report is never
    trusted on its own: anyone can change a report, sign it with a key of their own and embed that key.
    MissingExtra when `cryptography` is not installed."""
    public_key_type, invalid_signature = _ed25519()
    trusted = trusted_mapping(public_keys)
    if isinstance(document, bytes | str):
        try:
            document = _strict(document)
        except (ValueError, RecursionError) as error:  # JSONDecodeError is a ValueError
            return Verification(False, None, f"not well-formed JSON: {error}")
    if not isinstance(document, dict) or set(document) != ENVELOPE_KEYS or not isinstance(document["report"], dict):
        return Verification(False, None, 'not a signed report: expected exactly {"report": {...}, "signature": {...}}')
    signature = document["signature"]
    if (
        not isinstance(signature, dict)
        or set(signature) != SIGNATURE_KEYS
        or not all(isinstance(value, str) for value in signature.values())
    ):
        return Verification(
            False, None, f"the signature must be an object of exactly {sorted(SIGNATURE_KEYS)}, each a string"
        )
    key_id = signature["key_id"]
    if signature["algorithm"] != ALGORITHM:
        return Verification(False, key_id, f"unsupported algorithm {signature['algorithm']!r}")
    if key_id not in trusted:
        return Verification(False, key_id, f"key {key_id} is not among the trusted public keys")
    if signature["public_key"] != trusted[key_id]:
        return Verification(False, key_id, f"the public key embedded in the report is not trusted key {key_id}'s")
    try:
        message = canonical_json(document["report"])
    except (ValueError, UnicodeEncodeError):
        return Verification(False, key_id, "the report has no canonical form (a lone surrogate or a non-finite number)")
    try:
        raw = base64.b64decode(trusted[key_id], validate=True)
        if key_id_of(raw) != key_id:
            return Verification(False, key_id, "the trusted public key does not match its key id")
        public_key_type.from_public_bytes(raw).verify(base64.b64decode(signature["value"], validate=True), message)
    except (invalid_signature, ValueError, TypeError):
        return Verification(
            False, key_id, "the signature does not match the report (it was altered, or signed by another key)"
        )
    return Verification(True, key_id, "signature valid")
