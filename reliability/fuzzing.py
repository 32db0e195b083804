"""What both fuzzers share: the weighted mix of attack classes, the per-class tally of
replies, and the collection of one batch's replies within a timeout."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

A = TypeVar("A")  # an attack generator
R = TypeVar("R")  # a reply as the fuzzer receives it


@dataclass
class ClassResult:
    """What one attack class got back."""

    name: str
    sent: int = 0
    replies: int = 0
    ok: int = 0
    structured_errors: int = 0
    internal_errors: int = 0
    unstructured: int = 0  # a reply that is not a valid reply
    unanswered: int = 0
    codes: dict[str, int] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.unanswered == 0 and self.unstructured == 0 and self.internal_errors == 0

    def error(self, code: str, *, internal: bool = False) -> None:
        """Count one error reply with ``code``."""
        self.codes[code] = self.codes.get(code, 0) + 1
        if internal:
            self.internal_errors += 1
        else:
            self.structured_errors += 1


class AttackMix(Generic[A]):
    """A table of ``(name, generator, weight)`` attack classes, drawn by weight, with a
    ``ClassResult`` per class."""

    def __init__(self, table: list[tuple[str, A, float]]) -> None:
        self.names = [name for name, _, _ in table]
        self.weights = [weight for _, _, weight in table]
        self.generators = {name: generator for name, generator, _ in table}
        self.results = {name: ClassResult(name) for name in self.names}

    def pick(self, rng: random.Random) -> tuple[A, ClassResult]:
        name = rng.choices(self.names, self.weights)[0]
        return self.generators[name], self.results[name]

    def classes(self) -> list[ClassResult]:
        """The classes that were sent anything, in table order."""
        return [self.results[n] for n in self.names if self.results[n].sent]


def collect(
    receive: Callable[[float], R | None],
    classify: Callable[[R, ClassResult], None],
    expected: int,
    result: ClassResult,
    timeout_s: float,
) -> None:
    """Read the replies to the ``expected`` messages just sent: ``receive(seconds left)``
    gives the next one, or None once the wait is over; what did not come is unanswered."""
    got = 0
    deadline = time.monotonic() + timeout_s
    while got < expected:
        reply = receive(max(0.0, deadline - time.monotonic()))
        if reply is None:
            break
        got += 1
        classify(reply, result)
    result.replies += got
    result.unanswered += expected - got
