"""S3 access: the few operations the loader needs on one bucket.

Clients and the translation of botocore's errors come from
:mod:`loader.store.aws`. Uploads go through boto3's transfer manager, which
switches to multipart uploads above ``multipart_threshold`` bytes. Every write
is one of the store's uploads and carries the server-side encryption the
settings ask for (:func:`encryption_args`), so no writer can leave it out;
reads need nothing: S3 decrypts SSE-S3 and SSE-KMS objects for any reader
allowed to (``kms:Decrypt`` on the key).

A store given an event's metrics counts every failed attempt in
``loader_errors_total{component="s3"}`` by :func:`attempt_error_kind`,
including those botocore retries away: throttling that never surfaces as an
error is still what an operator needs to see.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import botocore.exceptions
from boto3.s3.transfer import TransferConfig

from loader.config.settings import AwsSettings
from loader.store.aws import aws_client, storage_errors

if TYPE_CHECKING:
    from loader.metrics import EventMetrics

__all__ = ["ObjectInfo", "S3Store", "attempt_error_kind", "encryption_args"]

MIB = 1024 * 1024
_THROTTLING_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestThrottled",
    "RequestThrottledException",
}
_TIMEOUTS = (botocore.exceptions.ConnectTimeoutError, botocore.exceptions.ReadTimeoutError)
_CONNECTION = (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectionClosedError)


@dataclass(frozen=True)
class ObjectInfo:
    """An object listed in a bucket."""

    key: str
    size: int
    etag: str
    last_modified: datetime | None = None


def attempt_error_kind(
    exception: BaseException | None, status: int | None, parsed: dict[str, Any] | None
) -> str | None:
    """What went wrong with one HTTP attempt, as a bounded name (``throttling``, ``timeout``,
    ``connection``, the AWS error code or the exception's class); None if nothing did. A 404
    is an answer (``exists``), not an error."""
    if exception is not None:
        if isinstance(exception, _TIMEOUTS):
            return "timeout"
        if isinstance(exception, _CONNECTION):
            return "connection"
        return type(exception).__name__
    if status is None or status < 400 or status == 404:
        return None
    code = str((parsed or {}).get("Error", {}).get("Code") or status)
    return "throttling" if code in _THROTTLING_CODES else code


def encryption_args(settings: AwsSettings) -> dict[str, str]:
    """The upload arguments (boto3's ``ExtraArgs``, also on each multipart upload's creation)
    that request the configured server-side encryption; empty for the bucket's default."""
    args: dict[str, str] = {}
    if settings.sse is not None:
        args["ServerSideEncryption"] = settings.sse
    if settings.sse_kms_key_id is not None:
        args["SSEKMSKeyId"] = settings.sse_kms_key_id
    return args


def _count_attempts(metrics: EventMetrics) -> Callable[..., None]:
    """A handler of botocore's per-attempt ``response-received`` event."""

    def on_response(
        *,
        exception: BaseException | None = None,
        response_dict: dict[str, Any] | None = None,
        parsed_response: dict[str, Any] | None = None,
        **_: Any,
    ) -> None:
        status = response_dict.get("status_code") if response_dict else None
        kind = attempt_error_kind(exception, status, parsed_response)
        if kind is not None:
            metrics.error("s3", kind)

    return on_response


class S3Store:
    """The few S3 operations the loader needs, on one bucket."""

    def __init__(
        self,
        settings: AwsSettings,
        bucket: str,
        *,
        multipart_threshold: int = 64 * MIB,
        metrics: EventMetrics | None = None,
        max_attempts: int = 8,
    ) -> None:
        self.bucket = bucket
        self._client = aws_client("s3", settings, max_attempts=max_attempts)
        if metrics is not None:
            self._client.meta.events.register("response-received.s3.*", _count_attempts(metrics))
        self._write_args = encryption_args(settings)
        self._multipart_threshold = multipart_threshold
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold, multipart_chunksize=16 * MIB, max_concurrency=4
        )

    def upload_file(self, path: Path, key: str) -> None:
        """Upload a local file: one PUT below the multipart threshold (boto3's transfer manager
        starts a thread pool per call, which cost the worker more CPU than the PUT), multipart
        above it."""
        with storage_errors(f"upload s3://{self.bucket}/{key}"):
            if path.stat().st_size < self._multipart_threshold:
                with path.open("rb") as body:
                    self._client.put_object(Bucket=self.bucket, Key=key, Body=body, **self._write_args)
                return
            self._client.upload_file(
                str(path), self.bucket, key, Config=self._transfer, ExtraArgs=self._write_args
            )

    def upload_fileobj(self, body: IO[bytes], key: str) -> None:
        """Upload from a binary file object (multipart above the threshold)."""
        with storage_errors(f"upload s3://{self.bucket}/{key}"):
            self._client.upload_fileobj(
                body, self.bucket, key, Config=self._transfer, ExtraArgs=self._write_args
            )

    def put_new(self, body: bytes, key: str) -> bool:
        """Create an object only if there is none at ``key`` (S3's conditional write, one PUT);
        False, and nothing written, if there is one (also when a concurrent write won)."""
        with storage_errors(f"put s3://{self.bucket}/{key}"):
            try:
                self._client.put_object(
                    Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*", **self._write_args
                )
            except botocore.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
                    return False
                raise
            return True

    def download_file(self, key: str, path: Path) -> None:
        """Download an object into ``path`` (parent folders are created)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with storage_errors(f"download s3://{self.bucket}/{key}"):
            self._client.download_file(self.bucket, key, str(path), Config=self._transfer)

    def get_bytes(self, key: str) -> bytes:
        with storage_errors(f"get s3://{self.bucket}/{key}"):
            body: bytes = self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            return body

    def get_tail(self, key: str, size: int) -> bytes:
        """The last ``size`` bytes of an object (a Parquet footer without the whole file)."""
        with storage_errors(f"get s3://{self.bucket}/{key}"):
            response = self._client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes=-{size}")
            body: bytes = response["Body"].read()
            return body

    def get_head(self, key: str, size: int) -> bytes:
        """The first ``size`` bytes of an object (a file's magic bytes without the file)."""
        with storage_errors(f"get s3://{self.bucket}/{key}"):
            response = self._client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes=0-{size - 1}")
            body: bytes = response["Body"].read()
            return body

    def object_size(self, key: str) -> int | None:
        """The object's size in bytes (HEAD); None if there is no such object."""
        with storage_errors(f"head s3://{self.bucket}/{key}"):
            try:
                return int(self._client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
            except botocore.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise

    def list_objects(self, prefix: str, *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        """Every object under ``prefix``, in key order; with ``start_after``, only the keys after
        it (S3 starts the listing there: a time range of keys costs no requests before it)."""
        after = {"StartAfter": start_after} if start_after is not None else {}
        with storage_errors(f"list s3://{self.bucket}/{prefix}"):
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, **after):
                for item in page.get("Contents", []):
                    etag = item["ETag"].strip('"')
                    yield ObjectInfo(item["Key"], item["Size"], etag, item.get("LastModified"))

    def exists(self, key: str) -> bool:
        """Whether an object is there (recovery checks before rebuilding a file).

        A listing of the key itself, not HEAD: under a policy that lets the worker list only
        its own prefixes, S3 answers HEAD on a missing key with 403, not 404."""
        with storage_errors(f"list s3://{self.bucket}/{key}"):
            response = self._client.list_objects_v2(Bucket=self.bucket, Prefix=key, MaxKeys=1)
            return any(item["Key"] == key for item in response.get("Contents", []))

    def can_list(self, prefix: str) -> bool:
        """Whether the bucket answers a listing of ``prefix`` (readiness); False if there is
        no such bucket. Needs only the prefix-scoped ``s3:ListBucket`` a worker is granted."""
        with storage_errors(f"list s3://{self.bucket}/{prefix}"):
            try:
                self._client.list_objects_v2(Bucket=self.bucket, Prefix=prefix, MaxKeys=1)
            except botocore.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket", "NotFound"):
                    return False
                raise
            return True

    def bucket_exists(self) -> bool:
        """Whether the bucket exists (local stacks and tests, which may create it)."""
        with storage_errors(f"head bucket {self.bucket}"):
            try:
                self._client.head_bucket(Bucket=self.bucket)
            except botocore.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket", "NotFound"):
                    return False
                raise
            return True

    def create_bucket(self) -> None:
        """Create the bucket if it does not exist (local stacks and tests)."""
        if self.bucket_exists():
            return
        with storage_errors(f"create bucket {self.bucket}"):
            self._client.create_bucket(Bucket=self.bucket)
