"""Hostile peers on the control socket: requests nested past the decoder's depth, NUL
bytes and control characters in text fields, numbers out of range. Each gets a structured
error naming what is wrong, before anything starts, and the daemon keeps serving."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import msgspec
import zmq

from runforge_protocol import messages as m
from runforge_protocol.errors import ErrorCode
from tests.e2e.conftest import error_of
from tests.harness import DaemonProcess, start_detached, trainer_workspace, wait_result


class Peer:
    """A DEALER peer that sends raw frames and reads replies in order."""

    def __init__(self, daemon: DaemonProcess) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(f"ipc://{daemon.runtime_dir}/control.sock")

    def send(self, payload: bytes) -> None:
        self.sock.send(payload)

    def reply(self, timeout_ms: int = 30_000) -> m.Reply:
        assert self.sock.poll(timeout_ms), "no reply from the daemon"
        return m.reply_decoder.decode(self.sock.recv())

    def request(self, document: object) -> m.Reply:
        self.send(msgspec.msgpack.encode(document))
        return self.reply()

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


def nested_ping(depth: int) -> bytes:
    """A ping whose unknown field ``x`` holds ``depth`` nested one-element arrays."""
    return b"\x83\xa4type\xa4ping\xa2id\xa4deep\xa1x" + b"\x91" * depth + b"\xc0"


def status_counters(daemon: DaemonProcess) -> dict[str, int]:
    counters: dict[str, int] = daemon.ctl_json("status")["counters"]
    return counters


def test_deeply_nested_requests_are_answered_and_the_frames_behind_them_too(
    daemon: DaemonProcess,
) -> None:
    before = status_counters(daemon)
    peer = Peer(daemon)
    try:
        # Each deep frame is pipelined with pings behind it, as one burst: they sit in the
        # same read of the socket, so an exception in the callback would strand them.
        depths = (900, 1_200, 5_000, 100_000)
        for depth in depths:
            peer.send(nested_ping(depth))
            for n in range(3):
                peer.send(m.encode(m.Ping(id=f"behind-{depth}-{n}")))
        outcomes = {}
        for depth in depths:
            first = peer.reply()
            outcomes[depth] = first
            behind = [peer.reply() for _ in range(3)]
            assert [r.id for r in behind] == [f"behind-{depth}-{n}" for n in range(3)]
            assert all(r.ok for r in behind)
    finally:
        peer.close()
    # 900 levels decode (the unknown field is skipped); deeper is a structured error.
    assert outcomes[900].ok and outcomes[900].id == "deep"
    for depth in depths[1:]:
        reply = outcomes[depth]
        assert not reply.ok and reply.error is not None, depth
        assert reply.error.code is ErrorCode.BAD_REQUEST
        assert "nested too deeply" in reply.error.message
    after = status_counters(daemon)
    assert after["requests"] - before["requests"] >= len(depths) * 4
    assert after["errors"] - before["errors"] >= len(depths) - 1
    assert after["dropped_frames"] == before["dropped_frames"]


def test_control_characters_in_text_fields_are_bad_request_naming_the_field(
    daemon: DaemonProcess,
) -> None:
    workspace = trainer_workspace(daemon)
    train = {"type": "train", "workspace": str(workspace)}
    cases = {
        "name": {**train, "name": "evil\x00name"},
        "params": {**train, "params": {"C": "1\x00; rm -rf ~"}},
        "params ": {**train, "params": {"C\x1b[2J": "1"}},
        "preset": {**train, "preset": "std-train\n"},
        "workspace": {**train, "workspace": f"{workspace}\x00/x"},
        "dataset": {**train, "dataset": "data.csv\r"},
        "run_id": {"type": "show", "workspace": str(workspace), "run_id": "a\x00"},
        "path": {"type": "trust", "path": "/tmp/\x00"},
        "label": {
            "type": "inspect_dataset",
            "workspace": str(workspace),
            "path": "data.csv",
            "label": "\x9b31m",
        },
    }
    peer = Peer(daemon)
    try:
        for field, document in cases.items():
            reply = peer.request({**document, "id": f"bad-{field}"})
            assert not reply.ok and reply.error is not None, field
            assert reply.id == f"bad-{field}"
            assert reply.error.code is ErrorCode.BAD_REQUEST, (field, reply.error)
            assert reply.error.details == {"field": field.strip()}, (field, reply.error)
            assert "control character" in reply.error.message
    finally:
        peer.close()
    # Nothing started: no run folder, no run in the daemon.
    assert not (workspace / ".ml").exists()
    assert daemon.ctl_json("active")["runs"] == []


def test_numbers_out_of_range_are_bad_request_naming_the_field(daemon: DaemonProcess) -> None:
    workspace = trainer_workspace(daemon)
    ws = str(workspace)
    cases = {
        "grace_s": [
            {"type": "train", "workspace": ws, "grace_s": 1e300},
            {"type": "train", "workspace": ws, "grace_s": float("inf")},
            {"type": "train", "workspace": ws, "grace_s": float("nan")},
            {"type": "train", "workspace": ws, "grace_s": -1.0},
            {"type": "cancel", "workspace": ws, "grace_s": 1e300},
        ],
        "seed": [
            {"type": "train", "workspace": ws, "seed": -1},
            {"type": "train", "workspace": ws, "seed": 2**32},
            {"type": "train", "workspace": ws, "seed": 2**64 - 1},
        ],
        "since": [{"type": "replay", "workspace": ws, "run_id": "r", "since": -5}],
        "limit": [{"type": "runs", "workspace": ws, "limit": -1}],
    }
    peer = Peer(daemon)
    try:
        for field, documents in cases.items():
            for document in documents:
                reply = peer.request(document)
                assert not reply.ok and reply.error is not None, document
                assert reply.error.code is ErrorCode.BAD_REQUEST, (document, reply.error)
                assert reply.error.details == {"field": field}, (document, reply.error)
    finally:
        peer.close()
    assert not (workspace / ".ml").exists()


def test_runforgectl_train_with_hostile_values_starts_nothing(daemon: DaemonProcess) -> None:
    workspace = trainer_workspace(daemon)
    ws = ["--workspace", str(workspace), "--detach", "--json"]
    attempts = {
        "name": ["--name", "two\nlines"],
        "params": ["--param", "C=\x1b]0;pwned\x07"],
        "grace_s": ["--grace", "1e300"],
    }
    for field, args in attempts.items():
        error = error_of(daemon.ctl("train", *ws, *args))
        assert error["code"] == "BAD_REQUEST", (field, error)
        assert error["details"]["field"] == field
    assert not (workspace / ".ml").exists()
    assert daemon.ctl("ping").returncode == 0


def test_cancel_with_a_huge_grace_is_refused_and_the_run_stays_cancellable(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    daemon = daemon_factory(RF_TEST_MODE="graceful").start()
    workspace = trainer_workspace(daemon)
    run_id = start_detached(daemon, workspace)
    ws = ["-w", str(workspace), "--json"]
    error = error_of(daemon.ctl("cancel", run_id, "--grace", "1e300", *ws))
    assert error["code"] == "BAD_REQUEST" and error["details"]["field"] == "grace_s"
    assert [r["run_id"] for r in daemon.ctl_json("active")["runs"]] == [run_id]
    reply = daemon.ctl_json("cancel", run_id, "--grace", "30", "--no-wait", *ws[:2])
    assert reply["run"]["state"] == "cancelling"
    assert wait_result(workspace, run_id)["state"] == "cancelled_graceful"


def test_a_huge_grace_in_workspace_settings_is_refused_before_anything_starts(
    daemon: DaemonProcess,
) -> None:
    workspace = trainer_workspace(daemon, settings={"runforge.cancelGraceSeconds": 1e300})
    result = daemon.ctl("train", "--workspace", str(workspace), "--detach", "--json")
    error = error_of(result)
    assert error["code"] == "SETTINGS_INVALID", error
    assert "cancelGraceSeconds" in json.dumps(error)
    assert not (Path(workspace) / ".ml" / "runs").exists() or not list(
        (Path(workspace) / ".ml" / "runs").iterdir()
    )
