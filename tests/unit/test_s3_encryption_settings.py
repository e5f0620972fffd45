"""aws.sse and aws.sse_kms_key_id: validated when settings load, and sent with every object written."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from loader.config.settings import AwsSettings, load_settings
from loader.errors import ConfigError
from loader.store.s3 import encryption_args

pytestmark = pytest.mark.unit

KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
PACKAGE = Path(__file__).parents[2] / "loader"
OBJECT_WRITES = {
    "put_object",
    "upload_file",
    "upload_fileobj",
    "create_multipart_upload",
    "upload_part",
    "upload_part_copy",
    "copy_object",
}
"""boto3 S3 client calls that create an object (and would each need the encryption arguments)."""


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOADER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("LOADER_CONFIG", raising=False)
    for name in ("LOADER_AWS__SSE", "LOADER_AWS__SSE_KMS_KEY_ID"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, {}),
        ({"LOADER_AWS__SSE": "AES256"}, {"ServerSideEncryption": "AES256"}),
        ({"LOADER_AWS__SSE": "aws:kms"}, {"ServerSideEncryption": "aws:kms"}),
        *(
            (
                {"LOADER_AWS__SSE": "aws:kms", "LOADER_AWS__SSE_KMS_KEY_ID": key},
                {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": key},
            )
            for key in (
                f"arn:aws:kms:eu-west-1:123456789012:key/{KEY_ID}",
                KEY_ID,
                "mrk-1234abcd12ab34cd56ef1234567890ab",
                "alias/event-loader",
                "arn:aws-us-gov:kms:us-gov-west-1:123456789012:alias/event-loader",
            )
        ),
    ],
    ids=[
        "bucket-default",
        "sse-s3",
        "kms-aws-managed",
        "key-arn",
        "key-id",
        "multi-region",
        "alias",
        "alias-arn",
    ],
)
def test_settings_become_the_upload_arguments(
    isolated: None, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: dict[str, str]
) -> None:
    """The environment's sse settings are exactly the ExtraArgs every upload sends."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert encryption_args(load_settings(use_dev_stack=False).aws) == expected


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"LOADER_AWS__SSE_KMS_KEY_ID": KEY_ID}, "set LOADER_AWS__SSE=aws:kms"),
        ({"LOADER_AWS__SSE": "AES256", "LOADER_AWS__SSE_KMS_KEY_ID": KEY_ID}, "set LOADER_AWS__SSE=aws:kms"),
        (
            {"LOADER_AWS__SSE": "aws:kms", "LOADER_AWS__SSE_KMS_KEY_ID": "my-key"},
            "set LOADER_AWS__SSE_KMS_KEY_ID",
        ),
        (
            {"LOADER_AWS__SSE": "aws:kms", "LOADER_AWS__SSE_KMS_KEY_ID": f"arn:aws:s3:::bucket/{KEY_ID}"},
            "set LOADER_AWS__SSE_KMS_KEY_ID",
        ),
        ({"LOADER_AWS__SSE": "aes256"}, "aws.sse"),
    ],
    ids=["key-without-kms", "key-with-sse-s3", "not-a-key", "not-a-kms-arn", "unknown-algorithm"],
)
def test_inconsistent_encryption_settings_say_what_to_set(
    isolated: None, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    """A key without aws:kms, a malformed key or an unknown algorithm is a ConfigError naming the fix."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=expected) as caught:
        load_settings(use_dev_stack=False)
    assert "my-key" not in str(caught.value)  # a value pasted by mistake is not quoted back


def test_kms_key_needs_kms_when_built_directly() -> None:
    """The same check holds for settings built in code, not only loaded ones."""
    with pytest.raises(ValueError, match="LOADER_AWS__SSE=aws:kms"):
        AwsSettings(sse_kms_key_id=KEY_ID)


def test_objects_are_written_only_through_the_store() -> None:
    """No module but loader/store/s3.py calls an S3 write itself, so none can leave the encryption out."""
    outside = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "store" / "s3.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                receiver = ast.unparse(node.func.value)
                # S3Store's own upload methods are the sanctioned way in.
                if node.func.attr in OBJECT_WRITES and not receiver.endswith("store"):
                    outside.append(
                        f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {receiver}.{node.func.attr}"
                    )
    assert not outside
