"""Validation and quoting of every name that reaches SQL or S3.

Names come from specs and schemas written by people; they reach Snowflake
statements only through :func:`quote_ident` after :func:`check_ident`
accepted them, so a hostile name is refused long before any SQL runs.
"""

from __future__ import annotations

import re

__all__ = ["check_ident", "check_s3_prefix", "quote_ident", "quote_literal"]

# Snowflake's unquoted identifier grammar, upper-cased: letters, digits, _ and $,
# not starting with a digit or $. We quote anyway, but refusing anything else
# keeps names portable and queryable without quotes by analysts.
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,254}$")
_S3_PREFIX = re.compile(r"^[a-z0-9][a-z0-9._\-]*(/[a-z0-9][a-z0-9._=\-]*)*$")


def check_ident(name: str, what: str = "identifier") -> str:
    """Return ``name`` upper-cased if it is a safe Snowflake identifier, else raise ValueError."""
    if not _IDENT.fullmatch(name):
        raise ValueError(
            f"{what} {name!r} is not allowed: use letters, digits and underscores, "
            "starting with a letter or underscore (at most 255 characters)"
        )
    return name.upper()


def quote_ident(name: str) -> str:
    """Quote an identifier that :func:`check_ident` accepted, for use in SQL."""
    checked = check_ident(name)
    return f'"{checked}"'


def quote_literal(value: str) -> str:
    """Quote a string literal for SQL (single quotes doubled, backslashes escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def check_s3_prefix(prefix: str) -> str:
    """Return a normalised S3 prefix (no leading/trailing slash) or raise ValueError."""
    stripped = prefix.strip("/")
    if not _S3_PREFIX.fullmatch(stripped):
        raise ValueError(
            f"S3 prefix {prefix!r} is not allowed: use lower-case letters, digits, '.', '-', '_' "
            "and '=' in '/'-separated parts"
        )
    return stripped
