"""S3 event notifications delivered through SQS."""

from __future__ import annotations
