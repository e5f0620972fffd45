"""The naming rules of every name a spec or command line gives, and the quoting of SQL names.

Names come from specs, schemas and command lines written by people. Each is
checked, when it is read, against the rules of the system it ends up in:
Snowflake identifiers, Kafka topic names, S3 bucket names and keys, and the
Kubernetes names the Helm chart derives from an event name. A bad name is
refused with the rule it breaks long before any service sees it, and names
reach Snowflake statements only through :func:`quote_ident`.

Each ``check_*`` function returns the (normalised) name or raises ValueError
with a message naming the value (clipped) and the rule, ready to follow a
field name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from loader.errors import excerpt

__all__ = [
    "EVENT_NAME_CHARS",
    "S3_PREFIX_CHARS",
    "SNOWFLAKE_NAME_CHARS",
    "check_bucket",
    "check_event_name",
    "check_ident",
    "check_kafka_cluster",
    "check_s3_prefix",
    "check_topic",
    "quote_ident",
    "quote_literal",
]

SNOWFLAKE_NAME_CHARS = 255
"""Snowflake's limit on an identifier's length."""

# Snowflake's unquoted identifier grammar, upper-cased: letters, digits, _ and $,
# not starting with a digit or $. We quote anyway, but refusing anything else
# keeps names portable and queryable without quotes by analysts.
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")

EVENT_NAME_CHARS = 63
"""An event name becomes a Kubernetes DNS-1123 label (at most 63 characters) in the Helm chart."""

# Lower snake case: the name becomes a file name, an S3 prefix, a consumer group, a metrics
# label and, with underscores turned into hyphens, the Helm chart's DNS-1123 labels (a-z,
# 0-9 and '-', beginning and ending with a letter or digit). This is the subset valid for
# all of them; beginning with a letter also suits DNS-1035 (Service names).
_EVENT_NAME = re.compile(r"[a-z]([a-z0-9_]*[a-z0-9])?")

# Kafka's own topic rule (kafka.common.internals.Topic): 1-249 of these, not "." or "..".
_KAFKA_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4 = re.compile(r"\d{1,3}(\.\d{1,3}){3}")
# Reserved by S3 for other kinds of names (access point aliases, directory and table buckets, ...).
_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_BUCKET_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")

S3_PREFIX_CHARS = 512
"""Longest S3 prefix: a key adds at most 341 characters to it (dead-letter folder, time
folders, a 249-character topic and the file name), and S3 keys hold at most 1024."""
_S3_PREFIX_PART = re.compile(r"[a-z0-9][a-z0-9._=-]*")


def check_ident(name: str, what: str = "identifier") -> str:
    """Return ``name`` upper-cased if it is a safe Snowflake identifier, else raise ValueError."""
    if not _IDENT.fullmatch(name):
        raise ValueError(
            f"{what} {excerpt(name)} is not allowed: use letters, digits and underscores, "
            f"starting with a letter or underscore (at most {SNOWFLAKE_NAME_CHARS} characters)"
        )
    if len(name) > SNOWFLAKE_NAME_CHARS:
        raise ValueError(
            f"{what} {excerpt(name)} is not allowed: it has {len(name)} characters, "
            f"and Snowflake allows at most {SNOWFLAKE_NAME_CHARS}"
        )
    return name.upper()


def quote_ident(name: str) -> str:
    """Quote an identifier that :func:`check_ident` accepted, for use in SQL."""
    checked = check_ident(name)
    return f'"{checked}"'


def quote_literal(value: str) -> str:
    """Quote a string literal for SQL (single quotes doubled, backslashes escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def check_event_name(name: str) -> str:
    """Return ``name`` if it is a lower snake case event name, else raise ValueError saying why."""
    if not _EVENT_NAME.fullmatch(name) or len(name) > EVENT_NAME_CHARS:
        raise ValueError(
            f"event name {excerpt(name)} is not allowed: use lower snake case (a-z, digits and "
            "underscores, beginning with a letter and ending with a letter or digit, at most "
            f"{EVENT_NAME_CHARS} characters: it becomes a Kubernetes name), e.g. payment_captured"
        )
    return name


def check_topic(topic: str, what: str = "topic") -> str:
    """Return ``topic`` if Kafka accepts it as a topic name, else raise ValueError."""
    if not _KAFKA_NAME.fullmatch(topic) or topic in {".", ".."}:
        raise ValueError(
            f"{what} {excerpt(topic)} is not a valid Kafka topic name: use 1 to 249 letters, digits, "
            "'.', '_' and '-', and not '.' or '..'"
        )
    return topic


def check_kafka_cluster(cluster: str) -> str:
    """Return ``cluster`` if it is a plain name (a key of the settings' and chart's cluster maps)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", cluster):
        raise ValueError(
            f"Kafka cluster {excerpt(cluster)} is not allowed: use 1 to 63 letters, digits, '.', '_' "
            "and '-', beginning with a letter or digit"
        )
    return cluster


def _bucket_problems(bucket: str) -> Iterator[str]:
    """The S3 bucket naming rules ``bucket`` breaks, most basic first."""
    if not 3 <= len(bucket) <= 63:
        yield "must be 3 to 63 characters long"
    elif not _BUCKET.fullmatch(bucket):
        yield (
            "may hold only lower-case letters, digits, '.' and '-', "
            "and must begin and end with a letter or digit"
        )
    if ".." in bucket:
        yield "must not hold two adjacent periods"
    if _IPV4.fullmatch(bucket):
        yield "must not be formatted as an IP address"
    yield from (
        f"must not begin with {p!r} (reserved by S3)" for p in _BUCKET_PREFIXES if bucket.startswith(p)
    )
    yield from (f"must not end with {s!r} (reserved by S3)" for s in _BUCKET_SUFFIXES if bucket.endswith(s))


def check_bucket(bucket: str) -> str:
    """Return ``bucket`` if it follows S3's general purpose bucket naming rules, else raise ValueError."""
    for problem in _bucket_problems(bucket):
        raise ValueError(f"S3 bucket name {excerpt(bucket)} {problem} (S3's bucket naming rules)")
    return bucket


def check_s3_prefix(prefix: str) -> str:
    """Return ``prefix`` without a trailing slash if it is a safe S3 key prefix, else raise ValueError.

    It ends up in every key, in IAM policy resources (where ``*`` and ``?`` are wildcards)
    and in stage URLs, so only plain path parts are allowed: no leading ``/``, no empty,
    ``.`` or ``..`` parts, no backslashes or control characters.
    """
    stripped = prefix.removesuffix("/")
    rule = (
        "use '/'-separated parts of lower-case letters, digits, '.', '-', '_' and '=', each beginning "
        "with a letter or digit, with no leading '/' and no '..'"
    )
    if len(stripped) > S3_PREFIX_CHARS:
        raise ValueError(f"S3 prefix {excerpt(prefix)} is longer than {S3_PREFIX_CHARS} characters")
    if ".." in stripped or not all(_S3_PREFIX_PART.fullmatch(part) for part in stripped.split("/")):
        raise ValueError(f"S3 prefix {excerpt(prefix)} is not allowed: {rule}")
    return stripped
