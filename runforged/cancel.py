"""Cancel policy: SIGTERM, countdown, deadline, SIGKILL, and how a run ended.

Three pieces, none of which touches a process or a socket itself:

- ``classify_terminal_state``: a pure function from what was observed once the trainer
  exited to the run's terminal state and the reason for it (the table below);
- ``read_cancelled_marker``: the trainer's ``.cancelled`` marker, or None when it is
  absent, unreadable or not valid against the cancelled v1.0.0 schema (a corrupt marker
  counts as absent);
- ``CancelController``: the escalation for one run, on an injected clock and scheduler with
  injected actions, so it is tested exactly with a fake clock and wired to asyncio with
  ``CancelController.on_loop``.

Terminal state, first matching row wins (``exit 0`` is the trainer's exit status):

| state              | rule                                                                  |
|--------------------|-----------------------------------------------------------------------|
| completed          | ``artifacts_written`` observed, ``run.json`` exists, and exit 0 or a  |
|                    | cancel was requested (training won the race: a runner that finished   |
|                    | and was SIGTERMed during shutdown has everything on disk)              |
| cancelled_graceful | a valid ``.cancelled`` marker, or ``run_cancelled`` observed          |
| cancelled_forced   | a cancel was requested and the exit status is non-zero                |
| failed             | anything else: non-zero exit without a cancel, or exit 0 without      |
|                    | ``run.json`` or ``artifacts_written`` ("training incomplete")          |

Whether the daemon had to SIGKILL changes the reason, never the state: the state is decided
from files and events, not from how long the exit took. A graceful marker/event without a
cancel request (someone sent SIGTERM to the trainer directly) is still a graceful cancel.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import math
import os
import signal
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal, Protocol

import msgspec

from runforge_protocol.errors import ErrorCode
from runforge_protocol.records import RunState
from runforged.errors import RunforgeError

MARKER_NAME = ".cancelled"
MARKER_SCHEMA_VERSION = "cancelled.v1.0.0"
# A marker is a few hundred bytes; anything this large is not one.
MARKER_MAX_BYTES = 1 << 20
DEFAULT_GRACE_S = 5.0
# Float slack when turning "seconds to the deadline" into a whole countdown value.
_CLOCK_SLACK_S = 1e-6

CancelStep = Literal[
    "dataset_loading", "training", "metrics_computation", "artifact_writing", "shutdown"
]


class CancelledMarker(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``<run dir>/.cancelled`` as the cancelled v1.0.0 schema defines it."""

    schema_version: Literal["cancelled.v1.0.0"]
    run_id: Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9._-]+$")]
    run_dir: str
    cancelled_at: Annotated[datetime.datetime, msgspec.Meta(tz=True)]  # RFC 3339 date-time
    step: CancelStep
    reason: str = ""
    partial_artifacts: list[str] = []


_marker_decoder = msgspec.json.Decoder(CancelledMarker)


def read_cancelled_marker(run_dir: str | os.PathLike[str]) -> CancelledMarker | None:
    """The run's valid ``.cancelled`` marker, or None (absent, not a regular file (a
    symlink included), too large, not UTF-8 JSON, or not valid against the schema)."""
    path = Path(run_dir) / MARKER_NAME
    try:
        # O_NONBLOCK: a FIFO planted under the marker's name must not hang the daemon.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = b""
        while len(data) <= MARKER_MAX_BYTES:
            chunk = os.read(fd, MARKER_MAX_BYTES + 1 - len(data))
            if not chunk:
                break
            data += chunk
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(data) > MARKER_MAX_BYTES:
        return None
    try:
        return _marker_decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None


class Classification(msgspec.Struct, frozen=True):
    """A run's terminal state and why, in words for ``result.json`` and ``show``."""

    state: RunState
    reason: str  # "" only for a run that completed without any cancel


def classify_terminal_state(
    *,
    exit_code: int,
    cancel_requested: bool,
    artifacts_written: bool,
    run_json_exists: bool,
    marker_valid: bool,
    run_cancelled: bool,
    killed: bool,
) -> Classification:
    """Decide how a run ended, after its trainer exited (see the module's table).

    ``exit_code`` is the trainer's status as Python reports it (negative: killed by that
    signal). ``killed`` says the daemon SIGKILLed the tree at the grace deadline.
    """
    exit_text = _describe_exit(exit_code, killed)
    if artifacts_written and run_json_exists and (exit_code == 0 or cancel_requested):
        if not cancel_requested:
            return Classification(RunState.COMPLETED, "")
        reason = "training finished before the cancel took effect"
        if exit_code != 0:
            reason += f" ({exit_text} after artifacts_written)"
        return Classification(RunState.COMPLETED, reason)
    if marker_valid or run_cancelled:
        evidence = {
            (True, False): ".cancelled marker written",
            (False, True): "run_cancelled reported, no valid .cancelled marker",
            (True, True): ".cancelled marker written and run_cancelled reported",
        }[(marker_valid, run_cancelled)]
        reason = f"cancelled gracefully: {evidence}"
        if killed:
            reason += "; still running at the grace deadline, process tree killed"
        return Classification(RunState.CANCELLED_GRACEFUL, reason)
    if cancel_requested and exit_code != 0:
        if killed:
            reason = "cancelled by force: still running at the grace deadline, process tree killed"
        else:
            reason = f"cancelled by force: {exit_text} with no .cancelled marker or run_cancelled"
        return Classification(RunState.CANCELLED_FORCED, reason)
    if exit_code != 0:
        reason = exit_text
        if artifacts_written and run_json_exists:
            reason += " after writing its artifacts"
        return Classification(RunState.FAILED, reason)
    missing = [
        name
        for name, seen in (("run.json", run_json_exists), ("artifacts_written", artifacts_written))
        if not seen
    ]
    reason = "training incomplete: exited 0 without " + " or ".join(missing)
    if cancel_requested:
        reason += " after the cancel request, and with no .cancelled marker or run_cancelled"
    return Classification(RunState.FAILED, reason)


def _describe_exit(exit_code: int, killed: bool) -> str:
    if exit_code >= 0:
        return f"exited with code {exit_code}"
    try:
        name = signal.Signals(-exit_code).name
    except ValueError:
        name = f"signal {-exit_code}"
    return f"killed by {name}" + (" from the daemon" if killed else "")


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
