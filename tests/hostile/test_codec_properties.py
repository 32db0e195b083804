"""Properties of the wire codecs, for every message type at once: what the typed encoder
writes the typed decoder reads back unchanged, and no input at all, however hostile, makes
a decoder raise anything but its one structured error."""

from __future__ import annotations

import math
from typing import Any, get_args

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from runforge_protocol import messages as m
from runforgectl import jsonlines

CONTROL = [chr(c) for c in (*range(0x20), *range(0x7F, 0xA0))]
INT64_MIN, UINT64_MAX = -(2**63), 2**64 - 1

json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(INT64_MIN, 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def strategy(info: msgspec.inspect.Type) -> st.SearchStrategy[Any]:
    """Values valid for a msgspec type, constraints included."""
    mi = msgspec.inspect
    if isinstance(info, mi.StrType):
        alphabet = st.characters(blacklist_categories=("Cs",))
        if info.pattern:  # the only pattern on the wire: no control characters
            alphabet = st.characters(blacklist_categories=("Cs",), blacklist_characters=CONTROL)
        return st.text(alphabet, max_size=min(info.max_length or 40, 40))
    if isinstance(info, mi.IntType):
        lo = info.ge if info.ge is not None else INT64_MIN
        hi = info.le if info.le is not None else UINT64_MAX
        return st.integers(lo, hi)
    if isinstance(info, mi.FloatType):
        return st.floats(info.ge, info.le, allow_nan=False)
    if isinstance(info, mi.BoolType):
        return st.booleans()
    if isinstance(info, mi.NoneType):
        return st.none()
    if isinstance(info, mi.AnyType):
        return json_like
    if isinstance(info, mi.EnumType):
        return st.sampled_from(list(info.cls))
    if isinstance(info, mi.LiteralType):
        return st.sampled_from(info.values)
    if isinstance(info, mi.UnionType):
        return st.one_of([strategy(t) for t in info.types])
    if isinstance(info, mi.ListType):
        return st.lists(strategy(info.item_type), max_size=3)
    if isinstance(info, mi.DictType):
        return st.dictionaries(
            strategy(info.key_type),
            strategy(info.value_type),
            max_size=min(info.max_length or 3, 3),
        )
    if isinstance(info, mi.Metadata):  # a type annotated with a description
        return strategy(info.type)
    if isinstance(info, mi.StructType):
        fields = {f.name: strategy(f.type) for f in info.fields}
        return st.fixed_dictionaries(fields).map(lambda kw: info.cls(**kw))
    raise NotImplementedError(info)


def of(cls: type) -> st.SearchStrategy[Any]:
    return strategy(msgspec.inspect.type_info(cls))


REQUEST_TYPES = get_args(m.Request)
requests = st.one_of([of(cls) for cls in REQUEST_TYPES])
replies = of(m.Reply)
events = of(m.Event)

# Well-formed MessagePack of any shape (maps with any keys, bins, ext types), for the
# "hostile but decodable" half of the byte space.
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(INT64_MIN, UINT64_MAX)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20)
    | st.builds(msgspec.msgpack.Ext, st.integers(-128, 127), st.binary(max_size=8)),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["type", "id", "workspace", "run_id", "x"]) | st.text(max_size=6),
            inner,
            max_size=5,
        )
    ),
    max_leaves=20,
)
tags = st.sampled_from([*sorted(m.REQUEST_TAGS), "nope", ""])


def same(a: Any, b: Any) -> bool:
    """Equality where float NaN (allowed in replies' Any documents) equals itself."""
    return msgspec.json.encode(a) == msgspec.json.encode(b) if a != b else True


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(requests)
def test_every_valid_request_survives_a_messagepack_round_trip(request: m.RequestBase) -> None:
    assert m.decode_request(m.encode(request)) == request


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(requests)
def test_every_valid_request_survives_the_bridge_json_round_trip(request: m.RequestBase) -> None:
    assert jsonlines.decode_request(msgspec.json.encode(request)) == request


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(replies)
def test_every_reply_survives_a_round_trip(reply: m.Reply) -> None:
    assert same(m.reply_decoder.decode(m.encode(reply)), reply)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(events)
def test_every_event_survives_a_round_trip(event: m.Event) -> None:
    assert same(m.event_decoder.decode(m.encode(event)), event)


def _decodes_or_structured_error(payload: bytes) -> None:
    try:
        request = m.decode_request(payload)
    except msgspec.ValidationError as exc:
        field, message = m.invalid_field(exc)
        assert message
        known = {f for cls in REQUEST_TYPES for f in cls.__struct_fields__} | {"type"}
        assert field == "" or field in known, (field, str(exc))
    except msgspec.DecodeError:
        pass
    else:
        assert isinstance(request, REQUEST_TYPES)
    assert isinstance(m.decode_loose(payload), dict)


@settings(max_examples=400)
@given(st.binary(max_size=300))
@example(b"\x91" * 5_000 + b"\xc0")
@example(b"\x81\xa1k" * 100_000 + b"\xc0")
@example(b"\xdd\xff\xff\xff\xff")  # an array claiming 4 billion items
@example(b"\xdb\xff\xff\xff\xff")  # a str claiming 4 GiB
def test_arbitrary_bytes_decode_or_raise_the_structured_error(payload: bytes) -> None:
    _decodes_or_structured_error(payload)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(tags, st.dictionaries(st.text(max_size=10), msgpack_values, max_size=6))
def test_hostile_well_formed_messagepack_decodes_or_raises_the_structured_error(
    tag: str, fields: dict[str, Any]
) -> None:
    _decodes_or_structured_error(msgspec.msgpack.encode({"type": tag, **fields}))


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(requests, st.data())
def test_a_control_character_in_any_text_field_is_refused_naming_that_field(
    request: m.RequestBase, data: st.DataObject
) -> None:
    document = msgspec.to_builtins(request)
    text_fields = sorted(
        f.name
        for f in msgspec.inspect.type_info(type(request)).fields
        if _is_text(f.type) and isinstance(document.get(f.name), str)
    )
    if not text_fields:
        return
    field = data.draw(st.sampled_from(text_fields))
    value: str = document[field]
    at = data.draw(st.integers(0, len(value)))
    document[field] = value[:at] + data.draw(st.sampled_from(CONTROL)) + value[at:]
    with pytest.raises(msgspec.ValidationError) as caught:
        m.decode_request(msgspec.msgpack.encode(document))
    assert m.invalid_field(caught.value)[0] == field


def _is_text(info: msgspec.inspect.Type) -> bool:
    if isinstance(info, msgspec.inspect.UnionType):
        return any(_is_text(t) for t in info.types)
    return isinstance(info, msgspec.inspect.StrType) and info.pattern is not None


@settings(max_examples=400)
@given(st.binary(max_size=300))
@example(b"[" * 100_000)
@example(b'{"type": "ping", "protocol": 18446744073709551616}')
@example(b'{"type": "train", "workspace": "/w", "seed": 1' + b"0" * 5_000 + b"}")
@example(b'{"type": "train", "workspace": "/w", "grace_s": 1e400}')
def test_arbitrary_bridge_lines_decode_or_raise_the_structured_error(line: bytes) -> None:
    for decode in (jsonlines.decode_object, jsonlines.decode_request):
        try:
            decode(line)
        except jsonlines.JsonLineError as exc:
            assert str(exc)


def test_numbers_at_the_edges_of_their_range_are_accepted_and_beyond_refused() -> None:
    def train(**fields: Any) -> bytes:
        return msgspec.msgpack.encode({"type": "train", "workspace": "/w", **fields})

    assert m.decode_request(train(grace_s=m.MAX_GRACE_S)).grace_s == m.MAX_GRACE_S  # type: ignore[union-attr]
    assert m.decode_request(train(seed=m.MAX_SEED)).seed == m.MAX_SEED  # type: ignore[union-attr]
    for bad in (
        train(grace_s=math.nextafter(m.MAX_GRACE_S, math.inf)),
        train(grace_s=-0.001),
        train(seed=m.MAX_SEED + 1),
    ):
        with pytest.raises(msgspec.ValidationError):
            m.decode_request(bad)


def test_the_strategies_cover_every_request_type() -> None:
    assert {cls.__struct_config__.tag for cls in REQUEST_TYPES} == set(m.REQUEST_TAGS)
