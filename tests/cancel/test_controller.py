"""The cancel escalation, exactly: SIGTERM, a countdown each second, SIGKILL at the deadline.

A fake clock and scheduler stand in for the event loop, so every value and instant is
checked exactly; the last tests run the same controller on a real asyncio loop.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable

import pytest

from runforge_protocol.errors import ErrorCode
from runforged.cancel import CancelController
from runforged.errors import RunforgeError

START = 1000.0


class FakeTimer:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A scheduler whose time moves only when the test says so."""

    def __init__(self) -> None:
        self.time = START
        self._queue: list[tuple[float, int, FakeTimer, Callable[[], None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self.time

    def call_at(self, when: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer()
        heapq.heappush(self._queue, (when, next(self._order), timer, callback))
        return timer

    def advance(self, seconds: float) -> None:
        """Run every timer due within ``seconds``, each at its own instant."""
        end = self.time + seconds
        while self._queue and self._queue[0][0] <= end:
            when, _, timer, callback = heapq.heappop(self._queue)
            if not timer.cancelled:
                self.time = max(self.time, when)
                callback()
        self.time = end

    def pending(self) -> int:
        return sum(not timer.cancelled for _, _, timer, _ in self._queue)


class Harness:
    """A controller on a fake clock, logging (seconds since start, action, value)."""

    def __init__(self, default_grace_s: float = 5.0, *, announced: bool = True) -> None:
        self.clock = FakeClock()
        self.log: list[tuple[float, str, int | None]] = []
        self.controller = CancelController(
            default_grace_s=default_grace_s,
            now=self.clock.now,
            call_at=self.clock.call_at,
            send_term=lambda: self.record("sigterm"),
            kill_tree=lambda: self.record("kill_tree"),
            publish_countdown=lambda seconds: self.record("countdown", seconds),
            announced=announced,
        )

    def record(self, action: str, value: int | None = None) -> None:
        self.log.append((round(self.clock.time - START, 9), action, value))

    def at(self, seconds: float) -> None:
        """Move the clock to ``seconds`` after the start."""
        self.clock.advance(START + seconds - self.clock.time)


def countdown(*steps: tuple[float, int]) -> list[tuple[float, str, int | None]]:
    return [(t, "countdown", seconds) for t, seconds in steps]


def test_grace_5_sigterms_the_trainer_counts_5_4_3_2_1_and_kills_at_the_deadline() -> None:
    h = Harness()
    outcome = h.controller.request()
    assert not outcome.already_cancelling and outcome.deadline_in_s == 5.0
    h.at(60)
    assert h.log == [
        (0, "sigterm", None),
        *countdown((0, 5), (1, 4), (2, 3), (3, 2), (4, 1)),
        (5, "kill_tree", None),
    ]
    assert h.controller.cancel_requested and h.controller.killed


def test_a_cancel_before_run_start_holds_sigterm_until_the_trainer_announces_it() -> None:
    h = Harness(announced=False)
    h.controller.request()
    h.at(1.5)
    assert "sigterm" not in [action for _, action, _ in h.log]  # its handler may not exist yet
    h.controller.trainer_announced()
    h.at(60)
    assert h.log == [
        *countdown((0, 5), (1, 4)),
        (1.5, "sigterm", None),
        *countdown((2, 3), (3, 2), (4, 1)),
        (5, "kill_tree", None),  # the deadline is the one set by the request
    ]


def test_a_trainer_that_never_announces_run_start_is_killed_at_the_deadline_unsignalled() -> None:
    h = Harness(announced=False)
    h.controller.request()
    h.at(60)
    assert h.log == [*countdown((0, 5), (1, 4), (2, 3), (3, 2), (4, 1)), (5, "kill_tree", None)]
    h.controller.trainer_announced()  # too late: nothing more is sent
    assert h.log[-1] == (5, "kill_tree", None)


def test_a_trainer_announced_before_the_request_gets_sigterm_at_once() -> None:
    h = Harness(announced=False)
    h.controller.trainer_announced()
    h.controller.request()
    assert h.log[0] == (0, "sigterm", None)


def test_run_start_after_a_grace_0_kill_sends_nothing() -> None:
    h = Harness(announced=False)
    h.controller.request(0)
    h.controller.trainer_announced()
    assert h.log == [(0, "kill_tree", None)]


def test_nothing_is_killed_before_the_deadline() -> None:
    h = Harness()
    h.controller.request()
    h.at(4.999)
    assert "kill_tree" not in [action for _, action, _ in h.log]
    assert not h.controller.killed
    h.at(5)
    assert h.log[-1] == (5, "kill_tree", None)


def test_the_deadline_fires_even_with_no_countdown_left_to_publish() -> None:
    h = Harness(default_grace_s=0.4)
    h.controller.request()
    h.at(10)
    assert h.log == [(0, "sigterm", None), (0, "countdown", 1), (0.4, "kill_tree", None)]


def test_a_fractional_grace_counts_whole_seconds_aligned_to_the_deadline() -> None:
    h = Harness(default_grace_s=2.5)
    h.controller.request()
    h.at(10)
    assert h.log == [
        (0, "sigterm", None),
        *countdown((0, 3), (0.5, 2), (1.5, 1)),
        (2.5, "kill_tree", None),
    ]


def test_the_requested_grace_wins_over_the_default() -> None:
    h = Harness(default_grace_s=30)
    assert h.controller.request(2).deadline_in_s == 2
    h.at(60)
    assert h.log == [(0, "sigterm", None), *countdown((0, 2), (1, 1)), (2, "kill_tree", None)]


def test_grace_0_kills_at_once_without_sigterm_or_countdown() -> None:
    h = Harness()
    outcome = h.controller.request(0)
    assert outcome.deadline_in_s == 0
    assert h.log == [(0, "kill_tree", None)]
    assert h.controller.killed
    h.at(60)
    assert h.log == [(0, "kill_tree", None)]


def test_a_trainer_exiting_before_the_deadline_stops_the_countdown_and_kills_leftovers() -> None:
    h = Harness()
    h.controller.request()
    h.at(2.5)
    h.controller.trainer_exited()
    h.at(60)
    assert h.log == [
        (0, "sigterm", None),
        *countdown((0, 5), (1, 4), (2, 3)),
        (2.5, "kill_tree", None),  # workers the trainer left behind
    ]
    assert not h.controller.killed  # the trainer was not killed: it exited in time
    assert h.clock.pending() == 0


def test_a_trainer_exiting_without_any_cancel_still_leaves_no_workers_behind() -> None:
    h = Harness()
    h.at(7)
    h.controller.trainer_exited()
    h.controller.trainer_exited()
    assert h.log == [(7, "kill_tree", None)]
    assert not h.controller.cancel_requested and not h.controller.killed


def test_a_second_request_reports_already_cancelling_and_changes_nothing() -> None:
    h = Harness()
    h.controller.request()
    h.at(1.5)
    again = h.controller.request()
    assert again.already_cancelling and not again.shortened
    assert again.deadline_in_s == 3.5
    h.at(60)
    assert h.log == [
        (0, "sigterm", None),
        *countdown((0, 5), (1, 4), (2, 3), (3, 2), (4, 1)),
        (5, "kill_tree", None),
    ]


def test_a_longer_grace_never_extends_the_deadline() -> None:
    h = Harness()
    h.controller.request()
    h.at(1)
    again = h.controller.request(30)
    assert again.already_cancelling and not again.shortened and again.deadline_in_s == 4
    h.at(60)
    assert [entry for entry in h.log if entry[1] == "kill_tree"] == [(5, "kill_tree", None)]


def test_a_grace_ending_exactly_at_the_deadline_does_not_count_as_shorter() -> None:
    h = Harness()
    h.controller.request()
    h.at(2)
    again = h.controller.request(3)
    assert not again.shortened
    h.at(60)
    assert h.log[-1] == (5, "kill_tree", None)
    assert [v for _, action, v in h.log if action == "countdown"] == [5, 4, 3, 2, 1]


def test_a_strictly_shorter_grace_moves_the_deadline_and_restarts_the_countdown() -> None:
    h = Harness(default_grace_s=10)
    h.controller.request()
    h.at(2.5)
    shorter = h.controller.request(2)
    assert shorter.already_cancelling and shorter.shortened and shorter.deadline_in_s == 2
    h.at(60)
    assert h.log == [
        (0, "sigterm", None),  # sent once: the second request does not repeat it
        *countdown((0, 10), (1, 9), (2, 8), (2.5, 2), (3.5, 1)),
        (4.5, "kill_tree", None),
    ]


def test_a_shorter_grace_of_0_while_cancelling_kills_at_once() -> None:
    h = Harness()
    h.controller.request()
    h.at(1.25)
    assert h.controller.request(0).shortened
    h.at(60)
    assert h.log == [
        (0, "sigterm", None),
        *countdown((0, 5), (1, 4)),
        (1.25, "kill_tree", None),
    ]


def test_a_request_after_the_deadline_kill_reports_it_and_kills_nothing_more() -> None:
    h = Harness(default_grace_s=1)
    h.controller.request()
    h.at(3)
    late = h.controller.request(0)
    assert late.already_cancelling and not late.shortened and late.deadline_in_s == 0
    assert [action for _, action, _ in h.log].count("kill_tree") == 1


def test_the_deadline_kill_then_the_exit_kill_each_happen_once() -> None:
    h = Harness(default_grace_s=1)
    h.controller.request()
    h.at(1)
    h.controller.trainer_exited()
    assert h.log == [
        (0, "sigterm", None),
        (0, "countdown", 1),
        (1, "kill_tree", None),  # at the deadline
        (1, "kill_tree", None),  # once it exited: anything that escaped the first
    ]
    assert h.controller.killed


def test_a_request_after_the_trainer_exited_is_a_clear_error() -> None:
    h = Harness()
    h.controller.trainer_exited()
    with pytest.raises(RunforgeError) as error:
        h.controller.request()
    assert error.value.code is ErrorCode.RUN_NOT_ACTIVE
    assert h.log == [(0, "kill_tree", None)]


@pytest.mark.parametrize("grace", [-1.0, float("nan"), float("inf")])
def test_an_invalid_grace_is_rejected_before_anything_happens(grace: float) -> None:
    h = Harness()
    with pytest.raises(RunforgeError) as error:
        h.controller.request(grace)
    assert error.value.code is ErrorCode.BAD_REQUEST
    assert h.log == [] and not h.controller.cancel_requested


def test_an_invalid_default_grace_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        Harness(default_grace_s=-5)


def test_on_an_asyncio_loop_the_countdown_runs_and_the_deadline_actually_fires() -> None:
    async def scenario() -> list[tuple[str, int | None]]:
        log: list[tuple[str, int | None]] = []
        killed = asyncio.Event()

        def kill_tree() -> None:
            log.append(("kill_tree", None))
            killed.set()

        controller = CancelController.on_loop(
            asyncio.get_running_loop(),
            default_grace_s=1.2,
            send_term=lambda: log.append(("sigterm", None)),
            kill_tree=kill_tree,
            publish_countdown=lambda seconds: log.append(("countdown", seconds)),
            announced=True,
        )
        controller.request()
        await asyncio.wait_for(killed.wait(), timeout=30)
        assert controller.killed
        controller.trainer_exited()
        return log

    assert asyncio.run(scenario()) == [
        ("sigterm", None),
        ("countdown", 2),
        ("countdown", 1),
        ("kill_tree", None),
        ("kill_tree", None),
    ]
