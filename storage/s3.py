"""S3-compatible object store (AWS, MinIO, moto in tests) through boto3.

Credentials come from the normal boto3 chain (AWS_* environment, profiles, instance roles); this module
never reads, stores or logs them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from storage.base import (
    CHUNK_SIZE,
    ListedObject,
    ObjectNotFound,
    ObjectStore,
    StorageError,
    StorageUnavailable,
    check_key,
)

MULTIPART_SIZE = 8 << 20
DELETE_BATCH = 1000  # the most keys one DeleteObjects call accepts
LIST_PAGE_SIZE = 1000  # the most keys one ListObjectsV2 page returns
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_NO_BUCKET = {"NoSuchBucket"}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3Store(ObjectStore):
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region_name: str | None = None,
    ) -> None:
        if not bucket:
            raise ValueError("S3 bucket name must not be empty")
        self.bucket = bucket
        self.prefix = check_key(prefix.strip("/")) if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url
        # Custom endpoints (MinIO, moto) are addressed by path: their hosts have no per-bucket DNS names.
        s3_options = {"addressing_style": "path"} if endpoint_url else {}
        # Short connect timeout and few retries, so an unreachable endpoint fails in seconds, not minutes.
        config = Config(
            connect_timeout=5, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"}, s3=s3_options
        )
        session = boto3.session.Session()
        self._client = session.client("s3", endpoint_url=endpoint_url, region_name=region_name, config=config)
        self._session, self._config = session, config
        self._transfer = TransferConfig(multipart_threshold=MULTIPART_SIZE, multipart_chunksize=MULTIPART_SIZE)

    @cached_property
    def _ping_client(self) -> Any:
        """A client without retries: a health check should answer at once, not after the back-off."""
        no_retries = self._config.merge(Config(retries={"total_max_attempts": 1, "mode": "standard"}))
        return self._session.client(
            "s3", endpoint_url=self.endpoint_url, region_name=self._client.meta.region_name, config=no_retries
        )

    def __repr__(self) -> str:
        return f"S3Store(bucket={self.bucket!r}, prefix={self.prefix!r}, endpoint_url={self.endpoint_url!r})"

    def _full(self, key: str) -> str:
        key = check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextmanager
    def _errors(self, key: str | None = None) -> Iterator[None]:
        """Translate boto errors into the storage errors callers handle."""
        try:
            yield
        except ClientError as exc:
            code = _code(exc)
            if key is not None and code in _NOT_FOUND:
                raise ObjectNotFound(key) from None
            if code in _NO_BUCKET:
                raise StorageUnavailable(f"S3 bucket {self.bucket!r} does not exist") from exc
            raise StorageError(f"S3 error {code or 'unknown'} on bucket {self.bucket!r}") from exc
        except S3UploadFailedError as exc:
            raise StorageError(f"S3 upload to bucket {self.bucket!r} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageUnavailable(f"S3 unreachable: {exc}") from exc

    def _spool_dir(self, key_dir: str) -> None:
        return None

    def _store_file(self, key: str, path: Path) -> None:
        with self._errors():
            self._client.upload_file(str(path), self.bucket, self._full(key), Config=self._transfer)

    def iter_chunks(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        with self._errors(key):
            body = self._client.get_object(Bucket=self.bucket, Key=self._full(key))["Body"]
        return self._stream(body, key, chunk_size)

    def _stream(self, body: Any, key: str, chunk_size: int) -> Iterator[bytes]:
        try:
            with self._errors(key):
                yield from body.iter_chunks(chunk_size)
        finally:
            body.close()

    def _head(self, key: str) -> dict[str, Any]:
        with self._errors(key):
            return self._client.head_object(Bucket=self.bucket, Key=self._full(key))

    def exists(self, key: str) -> bool:
        try:
            self._head(key)
        except ObjectNotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        with self._errors():
            self._client.delete_object(Bucket=self.bucket, Key=self._full(key))

    def delete_prefix(self, prefix: str) -> list[str]:
        folder = self._full(prefix.rstrip("/")) + "/"
        strip = len(self.prefix) + 1 if self.prefix else 0
        deleted: list[str] = []
        with self._errors():
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=folder, PaginationConfig={"PageSize": LIST_PAGE_SIZE}
            )
            batch: list[dict[str, str]] = []
            for page in pages:
                batch.extend({"Key": obj["Key"]} for obj in page.get("Contents", []))
                while len(batch) >= DELETE_BATCH:
                    self._delete_batch(batch[:DELETE_BATCH])
                    deleted += [obj["Key"][strip:] for obj in batch[:DELETE_BATCH]]
                    batch = batch[DELETE_BATCH:]
            if batch:
                self._delete_batch(batch)
                deleted += [obj["Key"][strip:] for obj in batch]
        return deleted

    def _delete_batch(self, batch: list[dict[str, str]]) -> None:
        response = self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        if errors := response.get("Errors"):
            first = errors[0]
            raise StorageError(
                f"S3 could not delete {len(errors)} objects, e.g. {first.get('Key')}: {first.get('Code')}"
            )

    def list_objects(self, prefix: str) -> Iterator[ListedObject]:
        folder = self._full(prefix.rstrip("/")) + "/"
        strip = len(self.prefix) + 1 if self.prefix else 0
        with self._errors():
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=folder, PaginationConfig={"PageSize": LIST_PAGE_SIZE}
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    yield ListedObject(obj["Key"][strip:], _latest_write(obj["LastModified"]))

    def modified_at(self, key: str) -> float:
        return _latest_write(self._head(key)["LastModified"])

    def sweep_incomplete(self, older_than_seconds: float) -> int:
        """Abort multipart uploads begun before the cutoff: a process killed mid-upload leaves its parts stored
        (and billed) but invisible to every listing of objects."""
        cutoff = time.time() - older_than_seconds
        aborted = 0
        with self._errors():
            pages = self._client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else ""
            )
            stale = [
                (u["Key"], u["UploadId"])
                for page in pages
                for u in page.get("Uploads", [])
                if self._last_activity(u) < cutoff
            ]
            for key, upload_id in stale:
                try:
                    self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
                    aborted += 1
                except ClientError as exc:
                    if _code(exc) != "NoSuchUpload":  # another sweeper, or the upload just finished
                        raise
        return aborted

    def _last_activity(self, upload: dict[str, Any]) -> float:
        """When an upload began or last stored a part: a large upload still going on began long ago."""
        parts = self._client.list_parts(Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        return max(
            [_latest_write(upload["Initiated"])] + [_latest_write(p["LastModified"]) for p in parts.get("Parts", [])]
        )

    def _touch(self, key: str) -> None:
        # A server-side copy onto itself is the one way to renew LastModified (no bytes travel).
        with self._errors(key):
            full = self._full(key)
            self._client.copy_object(
                Bucket=self.bucket,
                Key=full,
                CopySource={"Bucket": self.bucket, "Key": full},
                MetadataDirective="REPLACE",
            )

    def ping(self) -> None:
        try:
            self._ping_client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            raise StorageUnavailable(f"S3 bucket {self.bucket!r} not usable: {_code(exc) or 'error'}") from exc
        except BotoCoreError as exc:
            raise StorageUnavailable(f"S3 unreachable: {exc}") from exc

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (setup scripts and tests)."""
        with self._errors():
            try:
                self._client.head_bucket(Bucket=self.bucket)
                return
            except ClientError as exc:
                if _code(exc) not in _NOT_FOUND | _NO_BUCKET:
                    raise
            kwargs: dict[str, Any] = {}
            region = self._client.meta.region_name
            if region and region != "us-east-1":  # us-east-1 rejects an explicit location constraint
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
            try:
                self._client.create_bucket(Bucket=self.bucket, **kwargs)
            except ClientError as exc:
                if _code(exc) not in {"BucketAlreadyOwnedByYou"}:
                    raise


def _latest_write(stamp: datetime) -> float:
    """The latest moment a stamp can stand for: S3 stamps are cut to whole seconds, so an object written at
    10.9 s reads 10.0; taking the second's end means nothing looks older than it is (the sweeper's grace holds)."""
    return stamp.timestamp() + 1.0
