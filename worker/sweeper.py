"""Crash leftovers, swept by the reconciler: what a process killed mid-upload leaves behind.

An API killed after its upload was stored but before its row committed leaves an object no row references
(for a dataset shard: personal data outside the erasure process), S3 an incomplete multipart upload, a folder
a scratch `.part` file. Objects under the upload prefixes that no row references, incomplete uploads and
scratch files are deleted once older than MCU_ORPHAN_GRACE_SECONDS: an upload in progress is younger (a
reused object's time is renewed by `put_stream`), the store is listed before the rows are read, so an
object whose row commits meanwhile is seen referenced, and each object's time is read again just before its
delete, so one that an upload of the same content renewed meanwhile stays. No bookkeeping table: the store is
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


def sweep(services: Services, grace_seconds: float) -> dict[str, int]:
    """Delete crash leftovers older than `grace_seconds`; returns what was removed, by kind (also logged)."""
    cutoff = time.time() - grace_seconds
    old = [
        obj.key for prefix in UPLOAD_PREFIXES for obj in services.store.list_objects(prefix) if obj.modified_at < cutoff
    ]
    with services.factory() as session:  # read after listing: a row committed meanwhile protects its object
        referenced = referenced_keys(session)
    orphans: list[str] = []
    for key in (key for key in old if key not in referenced):
        if _still_old(services.store, key, cutoff):
            services.store.delete(key)
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
    """Asked just before the delete: an upload of the same content may have renewed the object since the listing
    (`put_stream`), its row about to commit, and then it stays. The race left is one request long, not as long as
    the listing and the rows' read. False for an object gone already."""
    try:
        return store.modified_at(key) < cutoff
    except ObjectNotFound:
        return False
