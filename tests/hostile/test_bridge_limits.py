"""``runforgectl bridge`` fed hostile lines by an adapter: nested past the decoder's depth,
integers beyond 64 bits, a line far over the size limit. Each gets one structured error
line, the bridge never prints a traceback, and it keeps forwarding."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from runforgectl.jsonlines import MAX_LINE_BYTES
from tests.control.test_bridge import Bridge
from tests.harness import DaemonProcess


@pytest.fixture
def bridge(daemon: DaemonProcess) -> Iterator[Bridge]:
    b = Bridge(daemon)
    # The bridge announces itself once the daemon answered its hello.
    b.until(lambda out: out.get("notify") == "ready")
    yield b
    if b.proc.poll() is None:
        b.proc.kill()
        b.proc.wait()


def stderr_of(bridge: Bridge) -> str:
    assert bridge.close() == 0
    assert bridge.proc.stderr is not None
    return bridge.proc.stderr.read()


def assert_answers(bridge: Bridge, request_id: str) -> None:
    bridge.send({"type": "ping", "id": request_id})
    assert bridge.reply(request_id)["ok"] is True


def test_deeply_nested_lines_are_bad_request_and_the_bridge_keeps_going(bridge: Bridge) -> None:
    for depth in (1_200, 100_000):
        bridge.send('{"type": "ping", "id": "deep", "x": ' + "[" * depth + "]" * depth + "}")
        reply = bridge.read()  # no id: the line could not be read at all
        assert reply["ok"] is False and reply["error"]["code"] == "BAD_REQUEST", reply
        assert "nested too deeply" in reply["error"]["message"]
        bridge.send("[" * depth)  # not even closed
        reply = bridge.read()
        assert reply["error"]["code"] == "BAD_REQUEST"
        assert_answers(bridge, f"after-{depth}")
    assert "Traceback" not in stderr_of(bridge)


def test_integers_beyond_64_bits_are_bad_request_naming_the_field(bridge: Bridge) -> None:
    huge = 2**64
    lines = {
        "protocol": {"type": "ping", "id": "p", "protocol": huge},
        "seed": {"type": "train", "id": "s", "workspace": "/nowhere", "seed": huge},
        "since": {"type": "replay", "id": "r", "workspace": "/w", "run_id": "x", "since": huge},
        "limit": {"type": "runs", "id": "l", "workspace": "/w", "limit": -huge},
    }
    for field, document in lines.items():
        bridge.send(json.dumps(document))
        reply = bridge.reply(document["id"])
        assert reply["error"]["code"] == "BAD_REQUEST", reply
        assert reply["error"]["details"] == {"field": field}
    # A huge integer where nothing reads it (an unknown field) is ignored, as any
    # unknown field is; a huge id is not a string id.
    bridge.send(json.dumps({"type": "ping", "id": "u", "extra": huge}))
    assert bridge.reply("u")["ok"] is True
    bridge.send(json.dumps({"type": "ping", "id": huge}))
    assert bridge.read()["error"]["code"] == "BAD_REQUEST"
    assert_answers(bridge, "after")
    assert "Traceback" not in stderr_of(bridge)


def test_a_line_over_the_limit_is_one_error_and_the_next_line_is_served(bridge: Bridge) -> None:
    size = MAX_LINE_BYTES * 12  # ~50 MB, sent in one write
    bridge.send('{"type": "ping", "id": "big", "pad": "' + "x" * size + '"}')
    reply = bridge.read(timeout=120)
    assert reply["ok"] is False and reply["error"]["code"] == "MESSAGE_TOO_LARGE", reply
    assert_answers(bridge, "after")
    # Just under the limit is read and answered (the padding is an unknown field).
    bridge.send('{"type": "ping", "id": "fits", "pad": "' + "x" * (MAX_LINE_BYTES - 100) + '"}')
    assert bridge.reply("fits")["ok"] is True
    assert "Traceback" not in stderr_of(bridge)
