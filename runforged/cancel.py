"""Cancel policy: SIGTERM, countdown, deadline, SIGKILL of the tree.

``CancelController`` is the escalation for one run, on an injected clock and scheduler
with injected actions (the executor handle's ``signal_trainer`` and ``kill_tree``), so it
is tested exactly with a fake clock and wired to asyncio with ``CancelController.on_loop``.
It touches no process and no file itself, and it does not decide how the run ended
(``runforged.outcome`` does, from the evidence, including whether the deadline killed).
The live path and crash reconciliation use it alike.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Callable
from typing import Protocol

import msgspec

from runforge_protocol.errors import ErrorCode
from runforged.errors import RunforgeError

# Float slack when turning "seconds to the deadline" into a whole countdown value.
_CLOCK_SLACK_S = 1e-6


class Cancellable(Protocol):
    """What a scheduler returns for a pending call (``asyncio.TimerHandle`` is one)."""

    def cancel(self) -> None: ...


class CancelRequestOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What a cancel request achieved, for the ``cancel`` reply."""

    already_cancelling: bool  # a cancel was in progress before this request
    shortened: bool  # this request moved the deadline earlier
    deadline_in_s: float  # from now to the SIGKILL deadline; 0 once it has passed


class CancelController:
    """Escalation for one run: SIGTERM the trainer, count down, SIGKILL the tree.

    On the first request it records the intent (the caller persists it), sends SIGTERM to
    the trainer only — signalling data-loader workers at the same moment would kill them
    before the trainer can flush — and arms the deadline at now + grace; grace 0 kills at
    once. SIGTERM goes only to a trainer that has announced ``run_start`` (by then its
    handler is installed; before it, SIGTERM's default action would kill it with nothing
    flushed): a request that comes earlier holds the signal until the announcement
    (``trainer_announced``), within the same deadline. Until the trainer exits or the
    deadline passes it publishes its own countdown, the whole seconds left to the
    deadline (grace 5: 5, 4, 3, 2, 1), the first value at once and each next one when that
    many seconds remain. At the deadline, a trainer still alive gets its whole tree killed.
    When the trainer exits the countdown stops and any leftover process of the tree is
    killed, cancel or not: nothing of a run outlives it.

    A request while cancelling neither re-sends SIGTERM nor re-arms or extends the
    deadline; an explicit grace that ends strictly earlier than the current deadline moves
    the deadline there.
    """

    def __init__(
        self,
        *,
        default_grace_s: float,
        now: Callable[[], float],
        call_at: Callable[[float, Callable[[], None]], Cancellable],
        send_term: Callable[[], object],
        kill_tree: Callable[[], object],
        publish_countdown: Callable[[int], None],
        announced: bool = False,
    ) -> None:
        if not _is_valid_grace(default_grace_s):
            raise ValueError(f"default grace must be >= 0 seconds, got {default_grace_s!r}")
        self.default_grace_s = default_grace_s
        self._now = now
        self._call_at = call_at
        self._send_term = send_term
        self._kill_tree = kill_tree
        self._publish_countdown = publish_countdown
        self.cancel_requested = False
        self.killed = False  # the deadline passed with the trainer alive: tree SIGKILLed
        self.trainer_has_exited = False
        # run_start seen: the trainer's SIGTERM handler is in place (``announced=True`` for
        # a trainer known to be past that point, e.g. one re-attached after a restart).
        self.trainer_announced_start = announced
        self._term_held = False  # a SIGTERM waiting for run_start
        self.deadline: float | None = None  # on the injected clock
        self._deadline_handle: Cancellable | None = None
        self._countdown_handle: Cancellable | None = None

    @classmethod
    def on_loop(
        cls,
        loop: asyncio.AbstractEventLoop,
        *,
        default_grace_s: float,
        send_term: Callable[[], object],
        kill_tree: Callable[[], object],
        publish_countdown: Callable[[int], None],
        announced: bool = False,
    ) -> CancelController:
        """The controller on an asyncio loop's clock and timers (call it on the loop)."""
        return cls(
            default_grace_s=default_grace_s,
            now=loop.time,
            call_at=functools.partial(_call_at_precisely, loop),
            send_term=send_term,
            kill_tree=kill_tree,
            publish_countdown=publish_countdown,
            announced=announced,
        )

    def request(self, grace_s: float | None = None) -> CancelRequestOutcome:
        """Cancel the run; ``grace_s`` None means the default grace."""
        if grace_s is not None and not _is_valid_grace(grace_s):
            raise RunforgeError(
                ErrorCode.BAD_REQUEST,
                f"grace must be a number of seconds >= 0, got {grace_s!r}",
                "pass --grace 0 to kill at once, or a positive number of seconds",
                {"grace_s": repr(grace_s)},
            )
        if self.trainer_has_exited:
            raise RunforgeError(
                ErrorCode.RUN_NOT_ACTIVE,
                "the run's trainer has already exited",
                "see how it ended with `runforgectl show RUN_ID`",
            )
        now = self._now()
        if self.deadline is None:
            self.cancel_requested = True
            grace = self.default_grace_s if grace_s is None else grace_s
            if grace > 0:
                if self.trainer_announced_start:
                    self._send_term()
                else:
                    self._term_held = True
            self._arm(now, now + grace)
            return CancelRequestOutcome(
                already_cancelling=False, shortened=False, deadline_in_s=grace
            )
        shortened = grace_s is not None and not self.killed and now + grace_s < self.deadline
        if shortened and grace_s is not None:
            self._stop_timers()
            self._arm(now, now + grace_s)
        return CancelRequestOutcome(
            already_cancelling=True,
            shortened=shortened,
            deadline_in_s=max(0.0, self.deadline - now),
        )

    def trainer_announced(self) -> None:
        """The trainer emitted ``run_start``: deliver a SIGTERM held for it, if the
        deadline has not passed meanwhile."""
        self.trainer_announced_start = True
        if self._term_held and not self.trainer_has_exited and not self.killed:
            self._term_held = False
            self._send_term()

    def trainer_exited(self) -> None:
        """The trainer is gone: stop the countdown and the deadline, kill what it left."""
        if self.trainer_has_exited:
            return
        self.trainer_has_exited = True
        self._stop_timers()
        self._kill_tree()

    def _arm(self, now: float, deadline: float) -> None:
        self.deadline = deadline
        if deadline - now <= _CLOCK_SLACK_S:
            self._deadline_reached()
            return
        self._deadline_handle = self._call_at(deadline, self._deadline_reached)
        self._count_down(math.ceil(deadline - now - _CLOCK_SLACK_S))

    def _count_down(self, seconds_remaining: int) -> None:
        self._publish_countdown(seconds_remaining)
        if seconds_remaining > 1 and self.deadline is not None:
            self._countdown_handle = self._call_at(
                self.deadline - (seconds_remaining - 1),
                functools.partial(self._count_down, seconds_remaining - 1),
            )

    def _deadline_reached(self) -> None:
        self._term_held = False
        self._stop_timers()
        if not self.trainer_has_exited:
            self.killed = True
            self._kill_tree()

    def _stop_timers(self) -> None:
        for handle in (self._deadline_handle, self._countdown_handle):
            if handle is not None:
                handle.cancel()
        self._deadline_handle = self._countdown_handle = None


# asyncio rounds timer waits up to its clock resolution (about a millisecond), so a plain
# call_at fires late. Waking this much early and sleeping the rest keeps the SIGKILL
# within a fraction of a millisecond of the deadline.
_EARLY_WAKE_S = 0.002


def _call_at_precisely(
    loop: asyncio.AbstractEventLoop, when: float, callback: Callable[[], None]
) -> asyncio.TimerHandle:
    def fire() -> None:
        remaining = when - loop.time()
        if remaining > 0:
            time.sleep(remaining)
        callback()

    return loop.call_at(when - _EARLY_WAKE_S, fire)


def _is_valid_grace(grace_s: float) -> bool:
    return isinstance(grace_s, (int, float)) and math.isfinite(grace_s) and grace_s >= 0
