"""The committed JSON Schema and golden examples: current with the types, decodable by the
daemon's own typed codec byte for byte, valid against the schema, and complete."""

from __future__ import annotations

import hashlib
from typing import Any, get_args

import msgspec
import pytest

from runforge_contract.trainer_events import ALL_EVENTS as RUNNER_EVENT_TYPES
from runforge_protocol import events as ev
from runforge_protocol import messages as m
from tests.protocol.golden import (
    KINDS,
    all_examples,
    daemon_event_types,
    examples,
    schema,
    validator,
)
from tools import schema_gen

DECODERS: dict[str, Any] = {
    "requests": m.request_decoder,
    "replies": m.reply_decoder,
    "events": m.event_decoder,
}
STALE = f"stale: regenerate with `.venv/bin/{schema_gen.REGENERATE_COMMAND}` and commit"


def _ids(case: tuple[str, dict[str, Any]]) -> str:
    kind, example = case
    return f"{kind}:{example['name']}"


# --------------------------------------------------------------------------- current


def test_committed_schema_and_examples_are_what_the_generator_produces_now() -> None:
    for relative, text in schema_gen.render().items():
        path = schema_gen.PACKAGE_DIR / relative
        assert path.is_file(), f"protocol/{relative} is missing; {STALE}"
        assert path.read_text(encoding="utf-8") == text, f"protocol/{relative} is {STALE}"


def test_no_generated_file_is_left_over_from_an_older_generator() -> None:
    expected = {schema_gen.PACKAGE_DIR / relative for relative in schema_gen.render()}
    present = {
        path
        for folder in (schema_gen.SCHEMA_DIR, schema_gen.EXAMPLES_DIR)
        for path in folder.iterdir()
    }
    assert present == expected, f"unexpected files {sorted(present - expected)}; {STALE}"


def test_committed_schemas_are_valid_draft_2020_12() -> None:
    for kind in KINDS:
        document = schema(kind)
        assert document["$schema"] == schema_gen.JSON_SCHEMA_DIALECT
        validator(kind).check_schema(document)


# --------------------------------------------------------------------------- codec


@pytest.mark.parametrize("case", all_examples(), ids=_ids)
def test_golden_example_decodes_with_the_typed_decoder_and_re_encodes_to_the_same_bytes(
    case: tuple[str, dict[str, Any]],
) -> None:
    kind, example = case
    encoded = bytes.fromhex(example["msgpack_hex"])
    decoded = DECODERS[kind].decode(encoded)
    assert m.encode(decoded) == encoded


@pytest.mark.parametrize("case", all_examples(), ids=_ids)
def test_golden_example_bytes_decoded_as_plain_messagepack_are_its_json_form(
    case: tuple[str, dict[str, Any]],
) -> None:
    _kind, example = case
    assert msgspec.msgpack.decode(bytes.fromhex(example["msgpack_hex"])) == example["json"]


@pytest.mark.parametrize("case", all_examples(), ids=_ids)
def test_golden_example_json_form_re_encodes_to_the_same_bytes(
    case: tuple[str, dict[str, Any]],
) -> None:
    """What an adapter's codec does: build the map, encode it, send it."""
    kind, example = case
    typed = msgspec.convert(example["json"], DECODERS[kind].type)
    assert m.encode(typed).hex() == example["msgpack_hex"]


@pytest.mark.parametrize("case", all_examples(), ids=_ids)
def test_golden_example_validates_against_the_committed_schema(
    case: tuple[str, dict[str, Any]],
) -> None:
    kind, example = case
    validator(kind).validate(example["json"])


@pytest.mark.parametrize(
    ("kind", "document"),
    [
        ("requests", {"type": "replay", "workspace": "/w"}),  # run_id missing
        ("requests", {"type": "replay", "workspace": 5, "run_id": "r"}),
        ("requests", {"type": "frobnicate"}),
        ("requests", {"id": "no-type"}),
        ("replies", {"id": "x", "ok": False, "error": {"code": "NOT_A_CODE", "message": ""}}),
        ("replies", {"id": "x", "ok": True, "result": {"type": "no_such_result"}}),
        ("events", {"seq": 1, "run_seq": 1, "ts": 1.0}),  # type missing
    ],
)
def test_committed_schema_rejects_what_the_daemon_rejects(kind: str, document: Any) -> None:
    assert not validator(kind).is_valid(document)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(document, DECODERS[kind].type)


# --------------------------------------------------------------------------- complete


def test_every_request_type_has_a_golden_example_named_by_its_tag() -> None:
    assert {e["json"]["type"] for e in examples("requests")} == m.REQUEST_TAGS
    assert {e["name"] for e in examples("requests")} == m.REQUEST_TAGS


def test_every_result_type_has_a_golden_reply() -> None:
    result_tags = {t.__struct_config__.tag for t in get_args(m.Result)}
    shown = {e["json"]["result"]["type"] for e in examples("replies") if e["json"]["ok"]}
    assert shown == result_tags


def test_golden_replies_include_errors() -> None:
    errors = [e["json"]["error"] for e in examples("replies") if not e["json"]["ok"]]
    assert {error["code"] for error in errors} >= {"UNKNOWN_REQUEST", "WORKSPACE_NOT_TRUSTED"}


def test_every_event_type_has_a_golden_example() -> None:
    shown = {e["json"]["type"] for e in examples("events")}
    missing = (daemon_event_types() | set(RUNNER_EVENT_TYPES)) - shown
    assert not missing


def test_golden_event_topics_follow_the_documented_topic_scheme() -> None:
    for example in examples("events"):
        event = example["json"]
        if event["run_id"]:
            key = hashlib.sha256(event["workspace"].encode("utf-8")).hexdigest()[:16]
            assert example["topic"] == f"run/{key}/{event['run_id']}/{event['type']}"
        else:
            assert example["topic"] == f"daemon/{event['type']}"
            assert event["run_seq"] == 0


def test_golden_events_number_runs_without_gaps_and_the_daemon_strictly_increasing() -> None:
    events = [e["json"] for e in examples("events")]
    seqs = [event["seq"] for event in events]
    assert seqs == sorted(set(seqs))
    last: dict[str, int] = {}
    for event in events:
        if event["run_id"]:
            # A run's first shown event may follow elided ones; after that, no gaps.
            previous = last.get(event["run_id"])
            assert previous is None or event["run_seq"] == previous + 1
            last[event["run_id"]] = event["run_seq"]
    terminal = [event for event in events if event["type"] == ev.RUN_TERMINAL]
    assert {event["run_id"] for event in terminal} == set(last)
    for event in terminal:
        assert last[event["run_id"]] == event["run_seq"], "run_terminal is a run's last event"
