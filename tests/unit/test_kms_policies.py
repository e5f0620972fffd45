"""The IAM examples grant the KMS key what SSE-KMS needs: writers generate data keys, readers decrypt."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.unit

DEPLOY = Path(__file__).parents[2] / "deploy"
KEY = "arn:aws:kms:<REGION>:<ACCOUNT_ID>:key/<KMS_KEY_ID>"


def _kms_statements(policy: str) -> list[dict[str, Any]]:
    document = json.loads((DEPLOY / policy).read_text())
    return [st for st in document["Statement"] if "kms:" in json.dumps(st["Action"])]


@pytest.mark.parametrize(
    ("policy", "actions"),
    [
        # S3 decrypts the parts of a multipart upload to complete it, and the worker reads its files back.
        ("iam-policy-worker.json", {"kms:GenerateDataKey", "kms:Decrypt"}),
        ("iam-policy-loader.json", {"kms:Decrypt"}),
        ("iam-policy-snowflake.json", {"kms:Decrypt"}),
        # The gateway's spills are single PUTs: a data key, no decryption.
        ("iam-policy-gateway.json", {"kms:GenerateDataKey"}),
        # The audit reads footers (ranged GETs) and writes nothing.
        ("iam-policy-audit.json", {"kms:Decrypt"}),
    ],
)
def test_kms_grants_are_scoped_to_one_key_through_s3(policy: str, actions: set[str]) -> None:
    """One statement per policy: these actions only, on the one key ARN, and only when S3 asks."""
    [statement] = _kms_statements(policy)
    granted = statement["Action"]
    assert set([granted] if isinstance(granted, str) else granted) == actions
    assert statement["Effect"] == "Allow"
    assert statement["Resource"] == KEY
    assert statement["Condition"] == {"StringEquals": {"kms:ViaService": "s3.<REGION>.amazonaws.com"}}
