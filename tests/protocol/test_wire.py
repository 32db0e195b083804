"""PROTOCOL.md holds against a real daemon: golden requests sent byte for byte are answered
as documented, a client written only from the document follows a run with no gap and no
duplicate, and runforgectl's JSON output is the same documents."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zmq

from runforge_contract.trainer_events import SUCCESS_SEQUENCE
from tests.harness import DaemonProcess, trainer_workspace
from tests.protocol.golden import documented_result_types, examples, validator

REPLY_TIMEOUT_MS = 30_000
FOLLOW_TIMEOUT_S = 90.0
# How a completed run's events are ordered (PROTOCOL.md, "The order of a run's events").
COMPLETED_RUN_ORDER = [
    "run_queued",
    "run_spawned",
    *SUCCESS_SEQUENCE,
    "index_updated",
    "run_terminal",
]


def workspace_key(resolved_workspace: str) -> str:
    """The documented rule, written out independently of ``runforge_protocol.events``."""
    return hashlib.sha256(resolved_workspace.encode("utf-8")).hexdigest()[:16]


class DocumentedClient:
    """A client as an adapter author would write it from PROTOCOL.md alone: plain
    MessagePack maps over a DEALER and a SUB socket, no RunForge types."""

    def __init__(self, runtime_dir: Path) -> None:
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.control = self.context.socket(zmq.DEALER)
        self.control.setsockopt(zmq.LINGER, 0)
        self.control.connect(f"ipc://{runtime_dir}/control.sock")
        self.events = self.context.socket(zmq.SUB)
        self.events.setsockopt(zmq.LINGER, 0)
        self.events.connect(f"ipc://{runtime_dir}/events.sock")
        self.counter = 0
        self.replies: list[dict[str, Any]] = []

    def close(self) -> None:
        self.control.close()
        self.events.close()
        self.context.term()

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        self.counter += 1
        request_id = f"adapter-{self.counter}"
        self.control.send(msgspec.msgpack.encode({**request, "id": request_id, "protocol": 1}))
        while True:
            assert self.control.poll(REPLY_TIMEOUT_MS), f"no reply to {request}"
            reply: dict[str, Any] = msgspec.msgpack.decode(self.control.recv())
            self.replies.append(reply)
            if reply["id"] == request_id:
                return reply

    def subscribe(self, prefix: str) -> None:
        self.events.setsockopt(zmq.SUBSCRIBE, prefix.encode())

    def follow(
        self, workspace: str, run_id: str, deliver: Callable[[bytes | None, dict[str, Any]], None]
    ) -> None:
        """The recipe of "Following a run": replay, then live by ``run_seq``, replaying on
        a gap and when idle, until ``run_terminal``. ``deliver`` gets the live topic (None
        for a replayed event) and the event."""
        last = 0
        ended = False

        def take(topic: bytes | None, event: dict[str, Any]) -> None:
            nonlocal last, ended
            last = event["run_seq"]
            deliver(topic, event)
            ended = event["type"] == "run_terminal"

        def replay() -> bool:
            while True:
                reply = self.call(
                    {"type": "replay", "workspace": workspace, "run_id": run_id, "since": last}
                )
                assert reply["ok"], reply["error"]
                result = reply["result"]
                for event in result["events"]:
                    if event["run_seq"] > last:
                        take(None, event)
                if not result["events"] or last >= result["last_run_seq"]:
                    return bool(result["terminal"])

        if replay():
            return
        deadline = time.monotonic() + FOLLOW_TIMEOUT_S
        idle_since = time.monotonic()
        while not ended:
            assert time.monotonic() < deadline, f"run {run_id} did not end"
            if self.events.poll(200):
                topic, payload = self.events.recv_multipart()
                event = msgspec.msgpack.decode(payload)
                idle_since = time.monotonic()
                if event["run_id"] != run_id or event["run_seq"] <= last:
                    continue
                if event["run_seq"] > last + 1:
                    replay()
                    if event["run_seq"] <= last:
                        continue
                take(topic, event)
            elif time.monotonic() - idle_since > 1.0:
                if replay():
                    return
                idle_since = time.monotonic()


@pytest.fixture
def quick_trainer_daemon(daemon_factory: Callable[..., DaemonProcess]) -> DaemonProcess:
    """A daemon whose workspaces train with the test trainer: three steps, slow enough
    that some events arrive live."""
    return daemon_factory(RF_TEST_STEPS="3", RF_TEST_STEP_S="0.3").start()


@pytest.fixture
def client(daemon: DaemonProcess) -> Iterator[DocumentedClient]:
    documented = DocumentedClient(daemon.runtime_dir)
    try:
        yield documented
    finally:
        documented.close()


def test_golden_requests_sent_verbatim_are_answered_with_their_id_as_documented(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    daemon = daemon_factory().start()
    assert daemon.proc is not None
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    req = context.socket(zmq.REQ)
    result_types = documented_result_types()
    reply_schema = validator("replies")
    try:
        for sock in (dealer, req):
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(f"ipc://{daemon.runtime_dir}/control.sock")
        golden = {example["name"]: example for example in examples("requests")}
        for name, example in golden.items():
            if name == "shutdown":
                continue  # last: it stops the daemon
            dealer.send(bytes.fromhex(example["msgpack_hex"]))
            assert dealer.poll(REPLY_TIMEOUT_MS), f"no reply to golden {name}"
            reply = msgspec.msgpack.decode(dealer.recv())
            reply_schema.validate(reply)
            assert reply["id"] == example["json"]["id"]
            if reply["ok"]:
                assert reply["result"]["type"] == result_types[name]
            else:
                # The examples name a workspace that does not exist on this machine.
                assert reply["error"]["code"] == "WORKSPACE_NOT_FOUND", (name, reply)

        hello = bytes.fromhex(golden["hello"]["msgpack_hex"])
        req.send(hello)
        assert req.poll(REPLY_TIMEOUT_MS)
        assert msgspec.msgpack.decode(req.recv())["result"]["type"] == "hello"
        dealer.send_multipart([b"", hello])  # a DEALER emulating REQ
        assert dealer.poll(REPLY_TIMEOUT_MS)
        delimiter, payload = dealer.recv_multipart()
        assert delimiter == b"" and msgspec.msgpack.decode(payload)["ok"]

        dealer.send(bytes.fromhex(golden["shutdown"]["msgpack_hex"]))
        assert dealer.poll(REPLY_TIMEOUT_MS)
        stopped = msgspec.msgpack.decode(dealer.recv())
        reply_schema.validate(stopped)
        assert stopped["result"] == {
            "type": "shutdown",
            "cancelling_runs": [],
            "pid": daemon.proc.pid,
            "kept_runs": [],
        }
    finally:
        dealer.close()
        req.close()
        context.term()
    assert daemon.proc.wait(timeout=60) == 0
    daemon.assert_clean_runtime_dir()


def test_documented_error_replies_for_bad_input(client: DocumentedClient) -> None:
    cases: dict[str, dict[str, Any]] = {
        "UNKNOWN_REQUEST": {"type": "frobnicate"},
        "BAD_REQUEST": {"type": "replay", "workspace": "/w"},
        "PROTOCOL_MISMATCH": {"type": "ping", "protocol": 2},
        "INVALID_RUN_ID": {"type": "show", "workspace": "/", "run_id": "../../etc"},
        "INVALID_PATH": {"type": "runs", "workspace": "relative/path"},
    }
    reply_schema = validator("replies")
    for code, request in cases.items():
        request_id = f"bad-{code}"
        client.control.send(msgspec.msgpack.encode({"protocol": 1, **request, "id": request_id}))
        assert client.control.poll(REPLY_TIMEOUT_MS)
        reply = msgspec.msgpack.decode(client.control.recv())
        reply_schema.validate(reply)
        assert (reply["id"], reply["ok"], reply["error"]["code"]) == (request_id, False, code)
        assert reply["result"] is None and reply["error"]["message"]
    assert client.call({"type": "ping"})["ok"]  # and the daemon keeps serving


def test_a_client_written_from_the_document_follows_a_run_once_in_order_to_its_end(
    quick_trainer_daemon: DaemonProcess,
) -> None:
    workspace = trainer_workspace(quick_trainer_daemon)
    key = workspace_key(os.path.realpath(workspace))
    client = DocumentedClient(quick_trainer_daemon.runtime_dir)
    delivered: list[tuple[bytes | None, dict[str, Any]]] = []
    try:
        client.subscribe(f"run/{key}/")  # step 1: before train, by workspace
        hello = client.call({"type": "hello", "client": "documented-client/1"})
        assert hello["result"]["protocol"] == 1
        started = client.call({"type": "train", "workspace": str(workspace)})
        assert started["ok"], started["error"]
        run = started["result"]["run"]
        assert workspace_key(run["workspace"]) == key
        client.follow(run["workspace"], run["run_id"], lambda t, e: delivered.append((t, e)))
    finally:
        client.close()

    events = [event for _, event in delivered]
    assert [e["run_seq"] for e in events] == list(range(1, len(events) + 1))
    types = [e["type"] for e in events]
    assert [t for t in types if t in COMPLETED_RUN_ORDER and t != "train_progress"] == [
        t for t in COMPLETED_RUN_ORDER if t != "train_progress"
    ]
    assert types.count("train_progress") == 3
    terminal = events[-1]["data"]
    assert (terminal["state"], terminal["index_status"]) == ("completed", "indexed")
    event_schema = validator("events")
    for topic, event in delivered:
        event_schema.validate(event)
        assert (event["workspace"], event["run_id"]) == (run["workspace"], run["run_id"])
        if topic is not None:
            assert topic == f"run/{key}/{run['run_id']}/{event['type']}".encode()
    for reply in client.replies:
        validator("replies").validate(reply)


def test_runforgectl_json_output_is_the_protocol_documents(
    quick_trainer_daemon: DaemonProcess,
) -> None:
    daemon = quick_trainer_daemon
    workspace = str(trainer_workspace(daemon))
    started = daemon.ctl_json("train", "--detach", "-w", workspace)
    validator("replies", "TrainResult").validate(started)
    run_id = started["run"]["run_id"]

    streamed = daemon.ctl("events", "--run", run_id, "--json", "-w", workspace, timeout=120)
    assert streamed.returncode == 0, streamed.stderr
    events = [json.loads(line) for line in streamed.stdout.splitlines()]
    for event in events:
        validator("events").validate(event)
    assert [e["run_seq"] for e in events] == list(range(1, len(events) + 1))
    assert (events[0]["type"], events[-1]["type"]) == ("run_queued", "run_terminal")

    replayed = daemon.ctl("events", "--run", run_id, "--since", "3", "--json", "-w", workspace)
    # seq is given at publication: events a run's monitor persisted replay with seq 0.
    assert [_without_seq(json.loads(line)) for line in replayed.stdout.splitlines()] == [
        _without_seq(e) for e in events[3:]
    ]

    validator("replies", "RunsResult").validate(daemon.ctl_json("runs", "-w", workspace))
    validator("replies", "DocumentResult").validate(
        daemon.ctl_json("show", run_id, "-w", workspace)
    )
    missing = daemon.ctl("show", "no-such-run", "--json", "-w", workspace)
    assert missing.returncode == 1
    error = json.loads(missing.stdout)
    validator("replies", "ErrorInfo").validate(error)
    assert error["code"] == "RUN_NOT_FOUND"


def test_runforgectl_without_a_daemon_prints_daemon_unavailable_and_exits_3(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    never_started = daemon_factory()
    result = never_started.ctl("ping", "--json")
    assert result.returncode == 3
    assert json.loads(result.stdout)["code"] == "DAEMON_UNAVAILABLE"


def _without_seq(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != "seq"}
