"""Turn the `MCU_STORAGE_URL` setting into a store, so nothing else needs to know which backend is in use."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from storage.base import ObjectStore
from storage.local import LocalStore
from storage.s3 import S3Store

ACCEPTED = "file:///absolute/path, file://relative/path, s3://bucket or s3://bucket/prefix"


def open_store(url: str, *, s3_endpoint_url: str | None = None) -> ObjectStore:
    """`file://` URLs give a LocalStore (relative paths from the current directory); `s3://` an S3Store."""
    if url.startswith("file://"):
        location = unquote(url.removeprefix("file://"))
        if not location:
            raise ValueError(f"storage URL {url!r} names no folder; expected {ACCEPTED}")
        return LocalStore(Path(location) if location.startswith("/") else Path.cwd() / location)
    if url.startswith("s3://"):
        parts = urlsplit(url)
        if not parts.netloc:
            raise ValueError(f"storage URL {url!r} names no bucket; expected {ACCEPTED}")
        return S3Store(parts.netloc, prefix=parts.path.strip("/"), endpoint_url=s3_endpoint_url)
    raise ValueError(f"unsupported storage URL {url!r}; expected {ACCEPTED}")
