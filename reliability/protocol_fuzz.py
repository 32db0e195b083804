"""Protocol fuzzer: hostile frames at a real runforged's control socket, counting what
comes back. Every message sent deserves exactly one reply (none is beyond the size libzmq
cuts off), so a message without one within the timeout is a hang."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
import zmq

from reliability.attacks import FRAME_ATTACKS, Targets
from reliability.daemon import FuzzDaemon, ResourceSample
from runforge_protocol import messages as m
from runforge_protocol.errors import ErrorCode

WINDOW = 50  # messages in flight at once, all of one attack class
REPLY_TIMEOUT_S = 30.0


@dataclass
class ClassResult:
    """What one attack class got back."""

    name: str
    sent: int = 0
    replies: int = 0
    ok: int = 0
    structured_errors: int = 0
    internal_errors: int = 0
    unstructured: int = 0  # a reply that is not a valid Reply
    unanswered: int = 0
    codes: dict[str, int] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.unanswered == 0 and self.unstructured == 0 and self.internal_errors == 0


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
    names = [name for name, _, _ in FRAME_ATTACKS]
    weights = [w for _, _, w in FRAME_ATTACKS]
    generators = {name: gen for name, gen, _ in FRAME_ATTACKS}
    results = {name: ClassResult(name) for name in names}
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
                name = rng.choices(names, weights)[0]
                result = results[name]
                batch = min(WINDOW, frames - sent)
                for _ in range(batch):
                    sock.send_multipart(generators[name](rng, targets))
                result.sent += batch
                _collect(sock, batch, result)
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
    classes = [results[n] for n in names if results[n].sent]
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


def _collect(sock: zmq.Socket[bytes], expected: int, result: ClassResult) -> None:
    """Read the replies to the ``expected`` messages just sent."""
    got = 0
    deadline = time.monotonic() + REPLY_TIMEOUT_S
    while got < expected:
        remaining_ms = int((deadline - time.monotonic()) * 1000)
        if remaining_ms <= 0 or not sock.poll(remaining_ms):
            break
        frames = sock.recv_multipart()
        got += 1
        _classify(frames[-1], result)
    result.replies += got
    result.unanswered += expected - got


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
    code = reply.error.code.value
    result.codes[code] = result.codes.get(code, 0) + 1
    if reply.error.code is ErrorCode.INTERNAL_ERROR:
        result.internal_errors += 1
    else:
        result.structured_errors += 1
