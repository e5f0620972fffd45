"""AWS clients (S3 and SQS), with botocore's errors translated at this boundary.

Retries with exponential backoff and jitter are botocore's own ("standard"
mode); what still fails after them becomes a :class:`~loader.errors.StorageError`
whose ``transient`` flag says whether retrying later can help: the S3 and SQS
error codes that no retry fixes are listed here.
"""

from __future__ import annotations

from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from loader.config.settings import AwsSettings
from loader.errors import StorageError

__all__ = ["aws_client", "storage_errors"]

_TERMINAL_CODES = {
    "NoSuchBucket",
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidBucketName",
    "AllAccessDisabled",
    "NonExistentQueue",
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
    # SQS's JSON protocol names some of the refusals above differently, and adds its own.
    "AccessDeniedException",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "InvalidAddress",
    "InvalidSecurity",
    "KmsAccessDenied",
    "KmsDisabled",
    "KmsNotFound",
}


def aws_client(service: str, settings: AwsSettings, *, max_attempts: int = 8) -> Any:
    """A boto3 client for ``service`` configured from ``settings`` (path-style for local endpoints)."""
    config = botocore.config.Config(
        region_name=settings.region,
        retries={"mode": "standard", "max_attempts": max_attempts},
        s3={"addressing_style": "path"} if settings.endpoint_url else {},
        connect_timeout=10,
        read_timeout=60,
    )
    kwargs: dict[str, Any] = {"config": config}
    if settings.endpoint_url:
        kwargs["endpoint_url"] = settings.endpoint_url
    if settings.access_key_id and settings.secret_access_key:
        kwargs["aws_access_key_id"] = settings.access_key_id.get_secret_value()
        kwargs["aws_secret_access_key"] = settings.secret_access_key.get_secret_value()
    # A fresh session per client: boto3's default session is not thread-safe.
    session: Any = boto3.session.Session()
    return session.client(service, **kwargs)


class storage_errors:  # noqa: N801 - used as a lower-case context manager, like contextlib's
    """Translate botocore errors raised inside the block into StorageError."""

    def __init__(self, action: str) -> None:
        self.action = action

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            return
        if isinstance(exc, botocore.exceptions.ClientError):
            code = str(exc.response.get("Error", {}).get("Code", "Unknown"))
            message = exc.response.get("Error", {}).get("Message", "")
            raise StorageError(
                f"{self.action} failed: {code} {message}".strip(), transient=code not in _TERMINAL_CODES
            ) from exc
        if isinstance(exc, botocore.exceptions.BotoCoreError):
            raise StorageError(f"{self.action} failed: {exc}", transient=True) from exc
