"""Figure 6's editors: several event subscribers in one process, each its own SUB socket
(set up like ``runforgectl.client.Client``'s), all following one workspace until a run's
``run_terminal`` event, then reporting what each saw as JSON on stdout.

    python event_subscribers.py EVENTS_ENDPOINT TOPIC_PREFIX COUNT

Besides the workspace prefix, subscriber k also subscribes to a topic of its own
(``bench-ready-k``): the daemon's XPUB forwards only distinct subscriptions, so the
benchmark knows all are in once the daemon counts COUNT + 1 of them.

Per subscriber: events received, gaps (run sequence numbers never seen, counting from
1), and for ``train_progress`` events the latency from the trainer's write
(``timestamp``, wall clock, microseconds) to the moment the subscriber held the message,
plus the first and last such moments.
"""

from __future__ import annotations

import datetime
import json
import sys
import time
from typing import Any

import msgspec
import zmq

from benchmarks.stats import percentile
from runforge_protocol import messages as m

RCVHWM = 200_000  # as runforgectl.client.Client
TIMEOUT_S = 300


class Subscriber:
    """One SUB socket. While the run lasts it only stamps and keeps the raw frames, so
    that decoding in Python never makes the subscriber the bottleneck being measured."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, prefix: bytes) -> None:
        self.socket = ctx.socket(zmq.SUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.RCVHWM, RCVHWM)
        self.socket.connect(endpoint)
        self.socket.setsockopt(zmq.SUBSCRIBE, prefix)
        self.received: list[tuple[float, bytes]] = []
        self.done = False

    def drain(self) -> None:
        # Frames are read as runforgectl.client.queued_events reads them: topic and
        # payload with two plain recv calls (payloads are decoded in ``report``, where one
        # that does not decode would be counted).
        sock = self.socket
        while True:
            try:
                topic = sock.recv(zmq.NOBLOCK)
                payload = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.received.append((time.time(), payload))
            if topic.endswith(b"/run_terminal"):
                self.done = True

    def report(self) -> dict[str, Any]:
        seqs = set()
        latencies = []
        first_progress = last_progress = None
        undecodable = 0
        for held_at, payload in self.received:
            try:
                event = m.event_decoder.decode(payload)
            except msgspec.DecodeError:
                undecodable += 1
                continue
            seqs.add(event.run_seq)
            if event.type == "train_progress":
                latencies.append(held_at - _parse_utc(event.data["timestamp"]))
                if first_progress is None:
                    first_progress = held_at
                last_progress = held_at
        highest = max(seqs, default=0)
        return {
            "received": len(self.received),
            "gaps": highest - len(seqs),
            "undecodable": undecodable,
            "progress_events": len(latencies),
            "first_progress": first_progress,
            "last_progress": last_progress,
            "latency_p50_s": percentile(latencies or [0.0], 50),
            "latency_p99_s": percentile(latencies or [0.0], 99),
            "latency_max_s": max(latencies, default=0.0),
        }


def _parse_utc(stamp: str) -> float:
    # Python 3.10's fromisoformat does not accept the trailing "Z".
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def main(endpoint: str, prefix: bytes, count: int) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    subscribers = [Subscriber(ctx, endpoint, prefix) for _ in range(count)]
    for index, subscriber in enumerate(subscribers):
        subscriber.socket.setsockopt(zmq.SUBSCRIBE, f"bench-ready-{index}".encode())
    poller = zmq.Poller()
    for subscriber in subscribers:
        poller.register(subscriber.socket, zmq.POLLIN)
    by_socket = {s.socket: s for s in subscribers}
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not all(s.done for s in subscribers) and time.monotonic() < deadline:
            for sock, _ in poller.poll(1000):
                by_socket[sock].drain()
    finally:
        for subscriber in subscribers:
            subscriber.socket.close(0)
        ctx.term()
    print(json.dumps([s.report() for s in subscribers]))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2].encode(), int(sys.argv[3]))
