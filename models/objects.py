"""Stored objects named by rows, and the lock that keeps the two consistent.

Objects are content-addressed and shared: an upload of content already stored reuses the object, and a delete
(the sweeper's, an erasure's, a deleted model's) removes one that no row names. Checking "no row names it" and
deleting are two steps, and so are an upload's "the object is there" and the commit of its row: without a
lock, a delete could land between the second pair and leave a row naming nothing (CI saw it: the sweeper
deleted a shard an upload had just reused, and every read of it answered 404). So, per object key:

- the transaction that commits a row naming an object first `claim`s it: it holds the key's lock until it
  ends and makes sure the object is there, storing it again if a delete came first;
- a delete (`delete_unless`) holds the same lock while it looks at the rows again and deletes.

Postgres: a transaction-scoped advisory lock per key. SQLite: its single write lock, which every writing
transaction takes when it begins (models/db.py), so a claim serialises with every writer there.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import BinaryIO

from sqlalchemy import text
from sqlalchemy.orm import Session

from storage import ObjectStore, StorageError, rewound

log = logging.getLogger(__name__)


def lock_object(session: Session, key: str) -> None:
    """Hold `key`'s lock until the session's transaction ends."""
    if session.get_bind().dialect.name == "postgresql":
        lock_id = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)
        session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})
    else:
        session.connection()  # begins the transaction, with SQLite's write lock (BEGIN IMMEDIATE)


def claim(session: Session, store: ObjectStore, key: str, source: BinaryIO) -> None:
    """Before a row naming `key` is added: lock it for the rest of the transaction, and store it again from
    `source` (the content the upload stored, read from its start) if a delete removed it since. Claim a
    transaction's keys in sorted order where it can: two transactions that lock the same two keys in opposite
    orders deadlock (Postgres then aborts one)."""
    lock_object(session, key)
    if store.exists(key):
        return
    log.warning("object %s was deleted while an upload reused it: storing it again", key)
    stored = store.put_stream(key.rpartition("/")[0], rewound(source))
    if stored.key != key:
        raise StorageError(f"storing {key} again gave {stored.key}: its source changed")


def delete_unless(session: Session, store: ObjectStore, key: str, keep: Callable[[Session, str], bool]) -> bool:
    """Delete the object at `key` unless `keep(session, key)` (asked under the key's lock, in a transaction of
    its own: "a row names it") says no. True when it was deleted."""
    with session.begin():
        lock_object(session, key)
        if keep(session, key):
            return False
        store.delete(key)
    return True
