"""The Ed25519 key that signs proof-of-erasure reports, and checking a signed document offline.

The private key lives in a PEM file (`MCU_SIGNING_KEY_FILE`; the embedded default's is
`data_dir/signing-key.pem`, made 0600 on first use) or in the database, encrypted with
`MCU_SIGNING_KEY_PASSPHRASE`. Every key's public half stays in `signing_keys`: after a rotation, reports
signed by a retired key still verify. A signed document is `{"report": ..., "signature": {...}}`; the
signature is over the canonical JSON of "report" (models/audit.py `canonical_json`).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from models import SigningKey, utcnow
from models.audit import canonical_json
from settings import Settings

ALGORITHM = "Ed25519"
CURRENT = 1  # the `slot` of the key that signs now
log = logging.getLogger(__name__)


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id_of(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()[:16]


@dataclass(frozen=True)
class Signer:
    key_id: str
    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> str:
        return base64.b64encode(_raw_public(self.private_key)).decode()

    def sign(self, report: dict[str, Any]) -> dict[str, Any]:
        value = self.private_key.sign(canonical_json(report))
        return {"report": report, "signature": {"algorithm": ALGORITHM, "key_id": self.key_id,
                                                "public_key": self.public_key,
                                                "value": base64.b64encode(value).decode()}}


class SigningKeys:
    """The current signer, loaded once per key (a rotation elsewhere is picked up at the next report).
    Looking the key up is a read (`read_factory`: on SQLite it does not take the write lock, and
    `GET /v1/signing-key` is public); only making or replacing the current key writes."""

    def __init__(self, factory: sessionmaker[Session], settings: Settings,
                 read_factory: sessionmaker[Session] | None = None) -> None:
        self.factory, self.read_factory, self.settings = factory, read_factory or factory, settings
        self._cache: dict[str, Signer] = {}
        self._lock = threading.Lock()

    def current(self) -> Signer:
        with self._lock:
            file = self.settings.resolved_signing_key_file
            private = _key_from_file(file) if file is not None else None
            with self.read_factory() as session:
                row = session.scalar(select(SigningKey).where(SigningKey.slot == CURRENT))
                key_id, stored = (row.key_id, row.private_key) if row is not None else (None, None)
            if key_id is None or (private is not None and key_id != key_id_of(_raw_public(private))):
                try:
                    key_id, stored = self._install(private)
                except IntegrityError:  # another process made the first key at the same moment: the winner's
                    with self.read_factory() as session:
                        row = session.scalar(select(SigningKey).where(SigningKey.slot == CURRENT))
                        key_id, stored = row.key_id, row.private_key
            if key_id not in self._cache:
                if private is None:
                    if stored is None:
                        raise RuntimeError(f"signing key {key_id} lives in a file, but MCU_SIGNING_KEY_FILE is unset")
                    private = self._decrypt(stored)
                self._cache[key_id] = Signer(key_id, private)
            return self._cache[key_id]

    def _install(self, private: Ed25519PrivateKey | None) -> tuple[str, str | None]:
        """The key file's key (a new file: a rotation), or a new key kept in the database, becomes current."""
        with self.factory() as session, session.begin():
            if private is not None:
                row = _make_current(session, private, stored=None)
            else:
                private = Ed25519PrivateKey.generate()
                row = _make_current(session, private, stored=self._encrypt(private))
            return row.key_id, row.private_key

    def rotate(self) -> str:
        """Retire the current key and make a new one (in the key file when one is set); returns its id."""
        private = Ed25519PrivateKey.generate()
        file = self.settings.resolved_signing_key_file
        if file is not None:
            _write_key_file(file, private)
        with self.factory() as session, session.begin():
            return _make_current(session, private, stored=None if file else self._encrypt(private)).key_id

    def _encrypt(self, private: Ed25519PrivateKey) -> str:
        passphrase = self.settings.signing_key_passphrase
        if passphrase is None:
            log.warning("the report signing key is stored unencrypted: set MCU_SIGNING_KEY_PASSPHRASE")
        encryption = (serialization.BestAvailableEncryption(passphrase.get_secret_value().encode())
                      if passphrase else serialization.NoEncryption())
        return private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     encryption).decode()

    def _decrypt(self, pem: str) -> Ed25519PrivateKey:
        passphrase = self.settings.signing_key_passphrase
        key = serialization.load_pem_private_key(pem.encode(), passphrase.get_secret_value().encode()
                                                 if passphrase else None)
        assert isinstance(key, Ed25519PrivateKey)
        return key


def _make_current(session: Session, private: Ed25519PrivateKey, stored: str | None) -> SigningKey:
    """`private` becomes the current key and the previous one is retired. The slot is unique: of two
    processes making the first key at once, one commits and the other gets an IntegrityError."""
    raw = _raw_public(private)
    session.execute(update(SigningKey).where(SigningKey.slot == CURRENT).values(slot=None, retired_at=utcnow()))
    row = session.get(SigningKey, key_id_of(raw))
    if row is None:  # a key file that was current once before comes back with its old id
        row = SigningKey(key_id=key_id_of(raw), public_key=base64.b64encode(raw).decode())
        session.add(row)
    row.private_key, row.slot, row.retired_at = stored, CURRENT, None
    session.flush()
    return row


def _key_from_file(path: Path) -> Ed25519PrivateKey:
    if not path.exists():
        _write_key_file(path, Ed25519PrivateKey.generate())
    key = serialization.load_pem_private_key(path.read_bytes(), None)
    if not isinstance(key, Ed25519PrivateKey):
        raise RuntimeError(f"{path} does not hold an Ed25519 private key")
    return key


def _write_key_file(path: Path, key: Ed25519PrivateKey) -> None:
    """Written beside the target and renamed: a reader never sees half a key. Owner-only from the start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(scratch, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    os.replace(scratch, path)


def published_keys(session: Session) -> list[SigningKey]:
    return list(session.scalars(select(SigningKey).order_by(SigningKey.created_at.desc())))


@dataclass(frozen=True)
class Verification:
    ok: bool
    key_id: str | None
    reason: str


def verify(document: Any, trusted: dict[str, str] | None = None) -> Verification:
    """Check a signed document. `trusted` maps key ids to base64 public keys (GET /v1/signing-key); without
    it the key embedded in the document is used, which proves integrity but not who signed."""
    if not isinstance(document, dict) or not isinstance(document.get("signature"), dict) or "report" not in document:
        return Verification(False, None, "not a signed report: expected {\"report\": ..., \"signature\": ...}")
    signature = document["signature"]
    key_id = signature.get("key_id")
    if signature.get("algorithm") != ALGORITHM:
        return Verification(False, key_id, f"unsupported algorithm {signature.get('algorithm')!r}")
    if trusted is not None and key_id not in trusted:
        return Verification(False, key_id, f"key {key_id} is not among the trusted public keys")
    public_b64 = trusted[key_id] if trusted is not None else signature.get("public_key", "")
    try:
        raw = base64.b64decode(public_b64, validate=True)
        if key_id_of(raw) != key_id:
            return Verification(False, key_id, "the public key does not match the key id")
        Ed25519PublicKey.from_public_bytes(raw).verify(base64.b64decode(signature.get("value", ""), validate=True),
                                                       canonical_json(document["report"]))
    except (InvalidSignature, ValueError):
        return Verification(False, key_id, "the signature does not match the report (it was altered, or signed "
                                           "by another key)")
    return Verification(True, key_id, "signature valid" + ("" if trusted is not None else
                                                           " (with the key embedded in the report: compare its "
                                                           "id with GET /v1/signing-key)"))
