"""The JSONC parser: JSON plus comments and trailing commas, errors with line and column."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from runforged.settings import JsoncError, parse_jsonc

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=16,
)

# Whitespace and comments that may sit between any two tokens; the comments themselves
# contain quotes, commas, brackets and comment openers that must not leak out of them.
trivia = st.lists(
    st.sampled_from(
        [
            " ",
            "\n",
            "\t",
            "\r\n",
            '// a "comment", with [brackets] /* and */\n',
            "/**/",
            "/* multi\n line, // not a line comment */",
            "//\n",
        ]
    ),
    max_size=3,
).map("".join)


def render(value: Any, data: st.DataObject) -> str:
    """``value`` as JSONC: random trivia around every token, random trailing commas."""

    def gap() -> str:
        return data.draw(trivia)

    if isinstance(value, dict):
        members = [
            gap()
            + json.dumps(key, ensure_ascii=data.draw(st.booleans()))
            + gap()
            + ":"
            + render(item, data)
            for key, item in value.items()
        ]
        trailing_comma: bool = data.draw(st.booleans())
        trailing = "," if members and trailing_comma else ""
        return gap() + "{" + ",".join(members) + trailing + gap() + "}" + gap()
    if isinstance(value, list):
        items = [render(item, data) for item in value]
        trailing_comma = data.draw(st.booleans())
        trailing = "," if items and trailing_comma else ""
        return gap() + "[" + ",".join(items) + trailing + gap() + "]" + gap()
    return gap() + json.dumps(value, ensure_ascii=data.draw(st.booleans())) + gap()


@settings(deadline=None)
@given(json_values, st.data())
def test_any_json_value_with_comments_and_trailing_commas_parses_to_the_same_value(
    value: Any, data: st.DataObject
) -> None:
    assert parse_jsonc(render(value, data)) == value


@settings(deadline=None)
@given(json_values, st.sampled_from([None, 0, 2]))
@example({"a//b": "c, /* d */", "url": "http://example.com/x,y"}, 2)
def test_plain_json_parses_exactly_like_the_json_module(value: Any, indent: int | None) -> None:
    text = json.dumps(value, indent=indent)
    assert parse_jsonc(text) == json.loads(text)


def test_strings_containing_comment_markers_and_commas_are_untouched() -> None:
    text = '{"path": "C://data,/*x*/", "re": "a,//b", // real comment\n}'
    assert parse_jsonc(text) == {"path": "C://data,/*x*/", "re": "a,//b"}


def test_escapes_and_surrogate_pairs_decode_like_json() -> None:
    text = r'["\"\\\/\b\f\n\r\t", "\u00e9\ud83d\ude00", "\ud800"]'
    assert parse_jsonc(text) == json.loads(text)


def test_a_byte_order_mark_is_skipped() -> None:
    assert parse_jsonc('\ufeff{"a": 1}') == {"a": 1}


@pytest.mark.parametrize(
    ("text", "line", "column", "reason"),
    [
        ("", 1, 1, "unexpected end of input"),
        ('{\n  "a": 1\n  "b": 2\n}', 3, 3, "expected ',' or '}'"),
        ("[1,,2]", 1, 4, "unexpected character ','"),
        ("{,}", 1, 2, "expected a property name"),
        ('{\n  "a": tru\n}', 2, 8, "unexpected character 't'"),
        ('{"a": "unterminated}', 1, 7, "unterminated string"),
        ("{} /* open", 1, 4, "unterminated /* comment"),
        ('{"a": 01}', 1, 8, "expected ',' or '}'"),
        ('["a\nb"]', 1, 4, "control character"),
        (r'["\x"]', 1, 3, "invalid escape"),
        (r'["\u12"]', 1, 5, "four hex digits"),
        ("[1] [2]", 1, 5, "unexpected content after the JSON value"),
        ("NaN", 1, 1, "unexpected character 'N'"),
        ("[" * 300 + "]" * 300, 1, 258, "nested deeper"),
    ],
)
def test_syntax_errors_name_the_line_and_column(
    text: str, line: int, column: int, reason: str
) -> None:
    with pytest.raises(JsoncError) as caught:
        parse_jsonc(text)
    assert reason in caught.value.reason
    assert (caught.value.line, caught.value.column) == (line, column)


# --- linear time and key lines (issue 10: a 570 KiB settings.json took 7 s) -------------


class _CountingText(str):
    """A document that counts the characters its ``count`` calls scan."""

    scanned = 0

    def count(self, sub: str, start: Any = None, end: Any = None) -> int:  # type: ignore[override]
        lo = 0 if start is None else start
        hi = len(self) if end is None else end
        _CountingText.scanned += max(0, hi - lo)
        return super().count(sub, start, end)


def test_key_lines_are_counted_in_one_pass_over_the_document() -> None:
    """Line numbers of 20,000 keys (a file of ~570 KiB) cost one scan of the text, not one
    scan from the start per key: the work is measured, not the time."""
    from runforged.settings import _JsoncParser

    body = ",\n".join(f'  "other.extension.setting{i}": "{"x" * 16}"' for i in range(20_000))
    text = _CountingText("{\n" + body + ',\n  "runforge.profile": "fast"\n}\n')
    assert len(text) > 570 * 1024 * 0.9
    _CountingText.scanned = 0
    parser = _JsoncParser(text)
    document = parser.document()
    assert document["runforge.profile"] == "fast"
    assert parser.top_level_key_lines["runforge.profile"] == 20_002
    assert parser.top_level_key_lines["other.extension.setting0"] == 2
    assert _CountingText.scanned <= len(text)


@settings(deadline=None)
@given(
    st.dictionaries(st.text(min_size=1, max_size=8), json_values, min_size=1, max_size=6),
    st.data(),
)
def test_each_top_level_key_line_is_the_line_its_name_starts_on(
    members: dict[str, Any], data: st.DataObject
) -> None:
    from runforged.settings import _JsoncParser

    text = "{"
    starts: dict[str, int] = {}
    for key, value in members.items():
        text += data.draw(trivia)
        starts[key] = len(text)
        text += json.dumps(key) + data.draw(trivia) + ":" + render(value, data) + ","
    text += data.draw(trivia) + "}"
    parser = _JsoncParser(text)
    assert parser.document() == members
    for key, at in starts.items():
        assert parser.top_level_key_lines[key] == text.count("\n", 0, at) + 1
