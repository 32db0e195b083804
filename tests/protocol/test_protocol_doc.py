"""PROTOCOL.md covers the whole contract and agrees with the code: every request with its
fields and result, every error code, every event type, the limits, discovery and the
runforgectl exit codes."""

from __future__ import annotations

import re
from typing import get_args

import msgspec
import pytest

from runforge_contract.trainer_events import ALL_EVENTS as RUNNER_EVENT_TYPES
from runforge_protocol import discovery
from runforge_protocol import messages as m
from runforge_protocol.errors import ErrorCode
from runforge_protocol.events import workspace_key
from runforgectl import exits as ctl
from tests.protocol.golden import daemon_event_types, documented_result_types, protocol_text

REQUEST_TYPES = {t.__struct_config__.tag: t for t in get_args(m.Request)}
RESULT_TYPES = {t.__struct_config__.tag: t for t in get_args(m.Result)}


def request_section(tag: str) -> str:
    """The text under ``#### `tag```, up to the next heading."""
    text = protocol_text()
    match = re.search(rf"^#### `{tag}`\n(.*?)(?=^#)", text, re.MULTILINE | re.DOTALL)
    assert match, f"PROTOCOL.md has no section '#### `{tag}`'"
    return match.group(1)


@pytest.mark.parametrize("tag", sorted(REQUEST_TYPES))
def test_every_request_type_has_a_section_naming_its_fields_and_result(tag: str) -> None:
    section = request_section(tag)
    fields = {f.name for f in msgspec.structs.fields(REQUEST_TYPES[tag])} - {"id", "protocol"}
    shared = re.search(r"Same fields as `(\w+)`", section)
    if shared:
        assert {f.name for f in msgspec.structs.fields(REQUEST_TYPES[shared.group(1)])} >= fields
    else:
        for name in fields:
            assert f"`{name}`" in section, f"section `{tag}` does not describe field {name}"
    result = RESULT_TYPES[documented_result_types()[tag]]
    assert f"`{result.__name__}`" in section, f"section `{tag}` does not name its result"


def test_the_request_to_result_table_covers_every_request_with_its_real_result_tag() -> None:
    table = documented_result_types()
    assert set(table) == set(REQUEST_TYPES)
    assert set(table.values()) == set(RESULT_TYPES)


def test_every_error_code_has_a_row_in_the_error_table() -> None:
    text = protocol_text()
    for code in ErrorCode:
        assert f"\n| `{code.value}` |" in text, f"{code.value} is not in the error table"


def test_every_event_type_has_a_row_in_the_event_tables() -> None:
    text = protocol_text()
    for kind in daemon_event_types() | set(RUNNER_EVENT_TYPES):
        assert f"\n| `{kind}` |" in text, f"event type {kind} is not documented"


def test_limits_are_the_codes_limits() -> None:
    text = protocol_text()
    assert f"({m.MAX_MESSAGE_BYTES} bytes)" in text
    assert f"({m.HARD_MAX_MESSAGE_BYTES} bytes)" in text
    assert f"# The RunForge control protocol, version {m.PROTOCOL_VERSION}" in text


def test_discovery_names_are_the_codes_names() -> None:
    text = protocol_text()
    for name in (
        discovery.RUNTIME_DIR_ENV,
        discovery.CONTROL_SOCKET,
        discovery.EVENTS_SOCKET,
        discovery.LOCK_FILE,
        discovery.PID_FILE,
    ):
        assert f"`{name}`" in text or f"/{name}`" in text, f"{name} is not documented"


def test_the_workspace_key_example_is_what_the_daemon_computes() -> None:
    text = protocol_text()
    match = re.search(r"`(/[^`]+)` has the key\s+`([0-9a-f]{16})`", text)
    assert match
    assert workspace_key(match.group(1)) == match.group(2)


def test_every_runforgectl_exit_status_is_documented() -> None:
    text = protocol_text()
    statuses = {v for k, v in vars(ctl).items() if k.startswith("EXIT_") and isinstance(v, int)}
    for status in statuses:
        assert f"\n| {status} |" in text, f"exit status {status} is not documented"
