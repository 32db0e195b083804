"""The client's reader of the event stream (``runforgectl.client.queued_events``, used by
``runforgectl events``/``follow`` and the editor bridge) against messages of the wrong
shape on a real PUB/SUB pair: a message of one frame, of three or four frames, a payload
that is not an event. A message without an event in its first two frames is skipped,
frames after the payload are ignored (PROTOCOL.md), the reader stays in step, and every
well-formed event comes through, in order."""

from __future__ import annotations

import time

import msgspec
import zmq

from runforge_protocol import messages as m
from runforgectl.client import queued_events
from tests.harness import remove_tree, short_tempdir


def _event(run_seq: int) -> bytes:
    event = m.Event(
        seq=run_seq, run_seq=run_seq, ts=1.0, type="train_progress", workspace="/w", run_id="r"
    )
    return msgspec.msgpack.encode(event)


def test_messages_of_the_wrong_shape_are_skipped_and_the_reader_stays_in_step() -> None:
    root = short_tempdir()
    ctx = zmq.Context()
    publisher = ctx.socket(zmq.XPUB)
    subscriber = ctx.socket(zmq.SUB)
    try:
        for sock in (publisher, subscriber):
            sock.setsockopt(zmq.LINGER, 0)
        endpoint = f"ipc://{root}/events.sock"
        publisher.bind(endpoint)
        subscriber.connect(endpoint)
        subscriber.setsockopt(zmq.SUBSCRIBE, b"/w/")
        assert publisher.poll(30_000), "no subscription arrived"
        publisher.recv()
        topic = b"/w/train_progress"
        publisher.send_multipart([topic, _event(1)])
        publisher.send(topic)  # one frame
        publisher.send_multipart([topic, _event(2)])
        publisher.send_multipart([topic, _event(90), b"extra"])  # three frames
        publisher.send_multipart([topic, _event(3)])
        publisher.send_multipart([topic, b"\xc1 not msgpack"])
        publisher.send_multipart([topic, _event(4)])
        publisher.send_multipart([topic, _event(91), b"a", b"b"])  # four frames
        publisher.send_multipart([topic, _event(5)])
        seen: list[int] = []
        give_up = time.monotonic() + 30
        while len(seen) < 7 and time.monotonic() < give_up:
            if subscriber.poll(1000):
                seen += [event.run_seq for _topic, event in queued_events(subscriber)]
        assert seen == [1, 2, 90, 3, 4, 91, 5]
    finally:
        subscriber.close(0)
        publisher.close(0)
        ctx.term()
        remove_tree(root)
