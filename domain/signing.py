"""The Ed25519 key that signs proof-of-erasure reports, and checking a signed document offline.

The private key lives in a PEM file (`MCU_SIGNING_KEY_FILE`; the embedded default's is
`data_dir/signing-key.pem`, made 0600 on first use) or in the database, encrypted with
`MCU_SIGNING_KEY_PASSPHRASE`. Every key's public half stays in `signing_keys`: after a rotation, reports
signed by a retired key still verify. A signed document is `{"report": ..., "signature": {...}}`; the
signature is over the canonical JSON of "report" (`mcu_client.evidence.canonical_json`, the definition the
client's verifier uses); `verify` is that verifier.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from domain.inputs import parse_json
from mcu_client.evidence import ALGORITHM, canonical_json, key_id_of, verify_report
from models import SigningKey, utcnow
from models.audit import SEALER, Resealing, reseal_chains
from settings import Settings

CURRENT = 1  # the `slot` of the key that signs now
log = logging.getLogger(__name__)


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class Signer:
    key_id: str
    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> str:
        return base64.b64encode(_raw_public(self.private_key)).decode()

    def sign(self, report: dict[str, Any]) -> dict[str, Any]:
        value = self.private_key.sign(canonical_json(report))
        return {
            "report": report,
            "signature": {
                "algorithm": ALGORITHM,
                "key_id": self.key_id,
                "public_key": self.public_key,
                "value": base64.b64encode(value).decode(),
            },
        }


class SigningKeys:
    """The current signer, loaded once per key id and process (a rotation elsewhere is picked up at the next
    use). It also seals the audit chains that every session of `factory` extends (models/audit.py), so each
    API and worker process holds one. Looking the key up is a read (`read_factory`: on SQLite it does not take
    the write lock, and `GET /v1/signing-key` is public); only making or replacing the current key writes."""

    def __init__(
        self, factory: sessionmaker[Session], settings: Settings, read_factory: sessionmaker[Session] | None = None
    ) -> None:
        self.factory, self.read_factory, self.settings = factory, read_factory or factory, settings
        self._cache: dict[str, Signer] = {}
        self._file: tuple[tuple[int, int], Ed25519PrivateKey] | None = None
        self._lock = threading.Lock()
        factory.configure(info={**factory.kw.get("info", {}), SEALER: self})

    def current(self) -> Signer:
        with self.read_factory() as session:
            signer = self._loaded(session)
        if signer is None:  # the first key, or a new key file
            with self.factory() as session, session.begin():
                signer = self.signer_in(session)
        return signer

    def signer_in(self, session: Session) -> Signer:
        """The current signer, read (and made, the first time) in `session`'s transaction."""
        signer = self._loaded(session)
        if signer is None:
            file_key = self._file_key()
            private = file_key or Ed25519PrivateKey.generate()
            previous = session.scalar(select(SigningKey.public_key).where(SigningKey.slot == CURRENT))
            try:
                with session.begin_nested():
                    _make_current(
                        session,
                        private,
                        None if file_key else self._encrypt(private),
                        public_from_b64(previous) if previous else None,
                    )
            except IntegrityError:  # another process made the first key at the same moment: the winner's
                pass
            signer = self._loaded(session)
            assert signer is not None
        return signer

    def sealing_key(self, session: Session) -> Ed25519PrivateKey:
        return self.signer_in(session).private_key

    def verifying_key(self) -> Ed25519PublicKey:
        """The current key's public half, from the key file or the passphrase-decrypted private key, never from
        the database's public_key column alone (anyone who can write the database could replace that)."""
        with self.read_factory() as session:
            signer = self._loaded(session)
        if signer is None:
            raise RuntimeError("no signing key is current yet, or the key file is not the database's current key")
        return signer.private_key.public_key()

    def _loaded(self, session: Session) -> Signer | None:
        """The current signer, or None when a key must be made current first (none yet, or a new key file)."""
        row = session.execute(
            select(SigningKey.key_id, SigningKey.private_key).where(SigningKey.slot == CURRENT)
        ).first()
        file_key = self._file_key()
        if row is None or (file_key is not None and row.key_id != key_id_of(_raw_public(file_key))):
            return None
        with self._lock:
            if row.key_id not in self._cache:
                if file_key is None and row.private_key is None:
                    raise RuntimeError(f"signing key {row.key_id} lives in a file, but MCU_SIGNING_KEY_FILE is unset")
                self._cache[row.key_id] = Signer(row.key_id, file_key or self._decrypt(row.private_key))
            return self._cache[row.key_id]

    def _file_key(self) -> Ed25519PrivateKey | None:
        """The key file's key (made on first use), parsed again only when the file changes."""
        path = self.settings.resolved_signing_key_file
        if path is None:
            return None
        if not path.exists():
            _write_key_file(path, Ed25519PrivateKey.generate())
        stat = path.stat()
        with self._lock:
            if self._file is None or self._file[0] != (stat.st_mtime_ns, stat.st_size):
                self._file = (stat.st_mtime_ns, stat.st_size), _key_from_file(path)
            return self._file[1]

    def rotate(self) -> Rotation:
        """Retire the current key and make a new one (in the key file when one is set); every chain that
        verifies is re-sealed with it, so verifying a chain needs the current key only."""
        private = Ed25519PrivateKey.generate()
        file = self.settings.resolved_signing_key_file
        with self.factory() as session, session.begin():
            previous = self.signer_in(session).private_key.public_key()  # the real key, not the stored column
            if file is not None:
                _write_key_file(file, private)
            return _make_current(session, private, None if file else self._encrypt(private), previous)

    def _encrypt(self, private: Ed25519PrivateKey) -> str:
        passphrase = self.settings.signing_key_passphrase
        if passphrase is None:
            log.warning("the report signing key is stored unencrypted: set MCU_SIGNING_KEY_PASSPHRASE")
        encryption = (
            serialization.BestAvailableEncryption(passphrase.get_secret_value().encode())
            if passphrase
            else serialization.NoEncryption()
        )
        return private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption).decode()

    def _decrypt(self, pem: str) -> Ed25519PrivateKey:
        passphrase = self.settings.signing_key_passphrase
        key = serialization.load_pem_private_key(
            pem.encode(), passphrase.get_secret_value().encode() if passphrase else None
        )
        if not isinstance(key, Ed25519PrivateKey):
            raise RuntimeError("the stored signing key is not an Ed25519 private key")
        return key


@dataclass(frozen=True)
class Rotation:
    key_id: str
    chains: Resealing


def _make_current(
    session: Session, private: Ed25519PrivateKey, stored: str | None, previous: Ed25519PublicKey | None
) -> Rotation:
    """`private` becomes the current key, the previous one is retired and the audit chains that verify with
    it are re-sealed with the new one. The slot is unique: of two processes making the first key at once,
    one commits and the other gets an IntegrityError."""
    raw = _raw_public(private)
    session.execute(update(SigningKey).where(SigningKey.slot == CURRENT).values(slot=None, retired_at=utcnow()))
    row = session.get(SigningKey, key_id_of(raw))
    if row is None:  # a key file that was current once before comes back with its old id
        row = SigningKey(key_id=key_id_of(raw), public_key=base64.b64encode(raw).decode())
        session.add(row)
    row.private_key, row.slot, row.retired_at = stored, CURRENT, None
    session.flush()
    return Rotation(row.key_id, reseal_chains(session, previous, private))


def public_from_b64(text: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))


def _key_from_file(path: Path) -> Ed25519PrivateKey:
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
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    os.replace(scratch, path)


def published_keys(session: Session) -> list[SigningKey]:
    return list(session.scalars(select(SigningKey).order_by(SigningKey.created_at.desc())))


# The one verifier is the client's (mcu_client/evidence.py), which the service's own callers use too.
verify = verify_report


MAX_DOCUMENT_BYTES, MAX_DEPTH = 16 * 2**20, 64


class MalformedDocument(ValueError):
    """A document that is not one strict JSON value: a report is refused before its signature is checked."""


def parse_document(data: bytes) -> Any:
    """The one strict JSON parser (domain/inputs.py: no duplicate key at any depth, so a second value for a
    signed key cannot pass unseen; bounded nesting and numbers), with any text: the signature covers what the
    service wrote, and `verify` refuses what has no canonical form. Every refusal is a MalformedDocument
    naming what is wrong."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise MalformedDocument(f"larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        return parse_json(data, max_depth=MAX_DEPTH, text_check=lambda _text: None)
    except ValueError as error:
        raise MalformedDocument(str(error)) from None


def trusted_keys(text: str) -> tuple[dict[str, str], str]:
    """Keys to trust (key id -> base64 public key) and the current one's id, from GET /v1/signing-key's JSON
    or one base64 public key. A ValueError names what the text is not."""
    try:
        document = parse_document(text.encode())
    except MalformedDocument:
        document = None
    if isinstance(document, dict) and isinstance(document.get("keys"), list):
        keys: dict[Any, Any] = {
            key.get("key_id"): key.get("public_key") for key in document["keys"] if isinstance(key, dict)
        }
        current = document.get("current")
        current_id = current.get("key_id") if isinstance(current, dict) else None
        if (
            keys
            and isinstance(current_id, str)
            and current_id in keys
            and all(isinstance(k, str) and isinstance(v, str) for k, v in keys.items())
        ):
            return keys, current_id
    try:
        raw = base64.b64decode(text.strip(), validate=True)
        Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as error:
        raise ValueError("neither GET /v1/signing-key's JSON nor a base64 Ed25519 public key") from error
    return {key_id_of(raw): text.strip()}, key_id_of(raw)
