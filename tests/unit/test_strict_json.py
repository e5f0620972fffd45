"""Strict JSON (loader.encode.strict_json): the one definition every decoding path applies."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loader.encode.strict_json import StrictJsonError, strict_loads, too_deep
from tests.unit.jsontext import LAYOUTS, Obj, dump

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "text",
    [
        b'{"a":1,"a":1}',
        b'{"a":1,"\\u0061":2}',  # the same key, escaped
        b'{"a" :1,"a":2}',
        b'{"a":"x\\":y","a":1}',  # a value holding '":' hides nothing
        b'{"k":":x","k":1}',
        b'{"\\"":1,"\\"":2}',
        b'{"\\\\":1,"\\\\":2}',
        b'[{"x":[{"y":1,"y":2}]}]',
        b'{"a":1,\n "a":2}',
    ],
)
def test_a_repeated_key_is_refused_however_written(text: bytes) -> None:
    """A key twice in one object is refused, whatever escapes or spacing hide it."""
    with pytest.raises(StrictJsonError, match="duplicate key"):
        strict_loads(text, 64)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b'{"a":"x\\":y"}', {"a": 'x":y'}),
        (b'{"a":1,"b":{"a":1}}', {"a": 1, "b": {"a": 1}}),
        (b'{"\\u0061":1,"b":"\\u003a"}', {"a": 1, "b": ":"}),
        (b'{"a" : "[[[[[["}', {"a": "[[[[[["}),
    ],
)
def test_the_same_key_in_different_objects_is_fine(text: bytes, expected: Any) -> None:
    """Keys repeat across objects, and quotes, colons or brackets in strings are text."""
    assert strict_loads(text, 3) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b'{"a":NaN}', "NaN is not JSON"),
        (b'{"a":[-Infinity]}', "-Infinity is not JSON"),
        (b'{"a":Inf}', "malformed JSON"),
        (b'{"a":1} {"b":2}', "malformed JSON"),
        (b'{"a":1,}', "malformed JSON"),
        (b'{"a":"\\ud800"}', "malformed JSON"),
        (b'{"a":"\xff"}', "not valid UTF-8"),
        (b"[" * 65 + b"]" * 65, "nested deeper than 64 levels"),
    ],
)
def test_what_is_not_strict_json(text: bytes, reason: str) -> None:
    """NaN, Infinity, trailing data or commas, lone surrogates, bad UTF-8 and deep nesting."""
    with pytest.raises(StrictJsonError, match=reason):
        strict_loads(text, 64)


def test_depth_counts_levels_not_brackets_and_the_outer_levels() -> None:
    """Depth is nesting (brackets in strings do not count); outer levels count towards it."""
    assert not too_deep(b"[" * 64 + b"]" * 64, 64)
    assert too_deep(b"[" * 65 + b"]" * 65, 64)
    assert not too_deep(b'[["[[[[", "]]]]]"], {"a": "{{{{{{"}]', 2)
    assert not too_deep(b"[" + b"[],{}," * 100 + b"[]]", 2)
    strict_loads(b"[" * 63 + b"]" * 63, 64, outer_depth=1)
    with pytest.raises(StrictJsonError, match="deeper than 64"):
        strict_loads(b"[" * 64 + b"]" * 64, 64, outer_depth=1)


_KEYS = st.sampled_from(["a", "b", '"', ":", '":', "\\", "é", "\u2028", " a"])
_TREES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(alphabet='a":\\[{ ', max_size=4)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(st.tuples(_KEYS, inner), max_size=4).map(lambda pairs: Obj(tuple(pairs))),
    ),
    max_leaves=12,
)


def _repeats(value: Any) -> bool:
    if isinstance(value, Obj):
        keys = [k for k, _ in value.pairs]
        return len(set(keys)) != len(keys) or any(_repeats(v) for _, v in value.pairs)
    return isinstance(value, list) and any(_repeats(v) for v in value)


def _plain(value: Any) -> Any:
    if isinstance(value, Obj):
        return {k: _plain(v) for k, v in value.pairs}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@settings(max_examples=300, deadline=None)
@given(_TREES, st.sampled_from(list(LAYOUTS)))
def test_repeated_keys_are_found_exactly(tree: Any, layout: str) -> None:
    """Whatever the keys and layout, a value is refused for a repeated key exactly when one of
    its objects repeats a key, and otherwise reads as written."""
    text = dump(tree, LAYOUTS[layout])
    if _repeats(tree):
        with pytest.raises(StrictJsonError, match="duplicate key"):
            strict_loads(text, 64)
    else:
        assert strict_loads(text, 64) == _plain(tree)
