"""Properties of the JSONC parser that reads untrusted workspaces' settings: it agrees with
a strict JSON parser on JSON, and no text at all makes it raise anything but JsoncError
(with a line and a column) — not deep nesting, not huge numbers, not stray bytes."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from runforged.settings import JsoncError, parse_jsonc

json_texts = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=15,
).map(lambda value: json.dumps(value, allow_nan=True))

jsonish = st.text(
    st.sampled_from([*'{}[],:"\\/*\n tfnrue0123456789-+.eE', "\x00", "\u2028", "é"]),
    max_size=60,
)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@settings(max_examples=300)
@given(json_texts)
def test_it_agrees_with_a_strict_json_parser_on_json(text: str) -> None:
    if "Infinity" in text or "NaN" in text:  # Python's extensions, not JSON
        return
    assert same(parse_jsonc(text), json.loads(text))


def _parses_or_jsonc_error(text: str) -> None:
    try:
        parse_jsonc(text)
    except JsoncError as exc:
        assert exc.line >= 1 and exc.column >= 1


@settings(max_examples=500)
@given(jsonish | st.text(max_size=80))
@example("[" * 100_000)
@example('{"a": ' * 50_000)
@example("1" * 5_000)
@example('{"runforge.cancelGraceSeconds": 1' + "0" * 5_000 + "}")
@example("1e99999")
@example('"\\ud800"')
@example("/* never closed")
@example('"' + "\\" * 10_001)
def test_any_text_parses_or_raises_jsonc_error_with_a_position(text: str) -> None:
    _parses_or_jsonc_error(text)


@settings(max_examples=200)
@given(json_texts, st.data())
def test_a_truncated_document_is_a_jsonc_error(text: str, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(text)))
    _parses_or_jsonc_error(text[:cut])
