"""Protocol fuzzer: hostile frames at a real runforged's control socket, counting what
comes back. Every message sent deserves exactly one reply (none is beyond the size libzmq
cuts off), so a message without one within the timeout is a hang."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import zmq

from reliability.attacks import FRAME_ATTACKS, Targets
from reliability.daemon import FuzzDaemon, ResourceSample
from reliability.fuzzing import AttackMix, ClassResult, collect
from runforge_protocol import messages as m
from runforge_protocol.errors import ErrorCode

WINDOW = 50  # messages in flight at once, all of one attack class
REPLY_TIMEOUT_S = 30.0


@dataclass
class ProtocolFuzzReport:
    frames_sent: int
    replies: int
    ok: int
    structured_errors: int
    internal_errors: int
    unstructured: int
    hangs: int
    crashes: int  # the daemon exited, or logged an exception
    duration_s: float
    counted_requests: int  # the daemon's own request counter over the run
    resources: list[ResourceSample]
    classes: list[ClassResult]

    @property
    def passed(self) -> bool:
        return (
            self.crashes == 0
            and self.hangs == 0
            and self.unstructured == 0
            and self.internal_errors == 0
        )


def run(
    frames: int, seed: int = 1, progress: Callable[[str], None] | None = None
) -> ProtocolFuzzReport:
    """Send ``frames`` hostile messages to a fresh daemon; stop by itself."""
    rng = random.Random(seed)
    mix = AttackMix(FRAME_ATTACKS)
    with FuzzDaemon() as daemon:
        targets = Targets(daemon.workspace, daemon.elsewhere)
        before = daemon.counters()
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(daemon.endpoints.control)
        samples = [daemon.sample(0)]
        sample_every = max(WINDOW, frames // 10)
        started = time.perf_counter()
        sent = 0
        crashed = False
        try:
            while sent < frames and not crashed:
                attack, result = mix.pick(rng)
                batch = min(WINDOW, frames - sent)
                for _ in range(batch):
                    sock.send_multipart(attack(rng, targets))
                result.sent += batch
                collect(_receiver(sock), _classify, batch, result, REPLY_TIMEOUT_S)
                before_sample = sent
                sent += batch
                if sent // sample_every != before_sample // sample_every or sent == frames:
                    if not daemon.alive():
                        crashed = True
                        break
                    samples.append(daemon.sample(sent))
                    if progress:
                        progress(f"protocol: {sent}/{frames} frames")
        finally:
            sock.close()
            ctx.term()
        duration = time.perf_counter() - started
        crashes = int(crashed or not daemon.alive()) + daemon.logged_exceptions()
        after = daemon.counters() if not crashed else before
    classes = mix.classes()
    return ProtocolFuzzReport(
        frames_sent=sent,
        replies=sum(c.replies for c in classes),
        ok=sum(c.ok for c in classes),
        structured_errors=sum(c.structured_errors for c in classes),
        internal_errors=sum(c.internal_errors for c in classes),
        unstructured=sum(c.unstructured for c in classes),
        hangs=sum(c.unanswered for c in classes),
        crashes=crashes,
        duration_s=duration,
        # The two status requests around the run count themselves.
        counted_requests=after.requests - before.requests - 1,
        resources=samples,
        classes=classes,
    )


def _receiver(sock: zmq.Socket[bytes]) -> Callable[[float], bytes | None]:
    def receive(wait_s: float) -> bytes | None:
        if wait_s <= 0 or not sock.poll(int(wait_s * 1000)):
            return None
        return sock.recv_multipart()[-1]

    return receive


def _classify(payload: bytes, result: ClassResult) -> None:
    try:
        reply = m.reply_decoder.decode(payload)
    except msgspec.DecodeError:
        result.unstructured += 1
        return
    if reply.ok:
        result.ok += 1
        return
    if reply.error is None:
        result.unstructured += 1
        return
    result.error(reply.error.code.value, internal=reply.error.code is ErrorCode.INTERNAL_ERROR)
