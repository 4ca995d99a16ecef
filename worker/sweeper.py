"""Crash leftovers, swept by the reconciler: what a process killed mid-upload leaves behind.

An API killed after its upload was stored but before its row committed leaves an object no row references
(for a dataset shard: personal data outside the erasure process), S3 an incomplete multipart upload, a folder
a scratch `.part` file. Objects under the upload prefixes that no row references, incomplete uploads and
scratch files are deleted once older than MCU_ORPHAN_GRACE_SECONDS: an upload in progress is younger (a
reused object's time is renewed by `put_stream`). Each object is deleted under its key's lock, after the rows
and its time are read again under it (models/objects.py): an upload that reuses it meanwhile either commits
its row first, or finds it gone when it claims it and stores it again. No bookkeeping table: the store is
compared with the rows.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Dataset, ModelVersion
from models.objects import delete_unless
from storage import ObjectNotFound, ObjectStore, sweep_scratch_files
from worker.services import Services

log = logging.getLogger(__name__)
UPLOAD_PREFIXES = ("shards", "weights")  # content-addressed objects a row must reference (storage/base.py)
LOGGED_KEYS = 20


def referenced_keys(session: Session) -> set[str]:
    """Every object key a row names: all versions' weights (deleted ones too: never guess) and datasets' shards."""
    keys = set(session.scalars(select(ModelVersion.storage_key)))
    for shards in session.scalars(select(Dataset.shards)):
        keys |= {shard["key"] for shard in shards}
    return keys


def names(session: Session, key: str) -> bool:
    """Whether a row names the object: `referenced_keys` for one key, without reading every version."""
    if session.scalar(select(ModelVersion.version).where(ModelVersion.storage_key == key).limit(1)) is not None:
        return True
    return any(shard["key"] == key for shards in session.scalars(select(Dataset.shards)) for shard in shards)


def sweep(services: Services, grace_seconds: float) -> dict[str, int]:
    """Delete crash leftovers older than `grace_seconds`; returns what was removed, by kind (also logged)."""
    cutoff = time.time() - grace_seconds
    old = [
        obj.key for prefix in UPLOAD_PREFIXES for obj in services.store.list_objects(prefix) if obj.modified_at < cutoff
    ]
    with services.factory() as session:  # the candidates, each read again under its lock below
        referenced = referenced_keys(session)
    orphans: list[str] = []

    def keep(session: Session, key: str) -> bool:
        return names(session, key) or not _still_old(services.store, key, cutoff)

    for key in (key for key in old if key not in referenced):
        with services.factory() as session:
            if delete_unless(session, services.store, key, keep):
                services.cache.discard(key.rsplit("/", 1)[-1])  # keys end in the content's sha256
                orphans.append(key)
    done = {
        "orphaned_objects": len(orphans),
        "incomplete_uploads": services.store.sweep_incomplete(grace_seconds),
        # The cache's downloads, an embedded store's uploads, and the API's spool files for S3 uploads.
        "scratch_files": sweep_scratch_files(services.settings.data_dir, older_than_seconds=grace_seconds)
        + sweep_scratch_files(Path(tempfile.gettempdir()), recursive=False, older_than_seconds=grace_seconds),
    }
    log.info(
        "sweeper: removed %s crash leftovers older than %g s (orphaned objects: %s)",
        done,
        grace_seconds,
        orphans[:LOGGED_KEYS] + (["..."] if len(orphans) > LOGGED_KEYS else []),
    )
    return done


def _still_old(store: ObjectStore, key: str, cutoff: float) -> bool:
    """Asked under the key's lock: an upload of the same content may have renewed the object since the listing
    (`put_stream`), its row about to commit, and then it stays. False for an object gone already."""
    try:
        return store.modified_at(key) < cutoff
    except ObjectNotFound:
        return False
