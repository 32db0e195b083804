"""Following a run's events to its end: replay what was missed, then live, no gap, no
duplicate; plus the progress and countdown displays built on it."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from runforge_contract.trainer_events import CEILING_FAMILIES
from runforge_protocol import events as ev
from runforge_protocol import messages as m
from runforgectl.client import Client, DaemonUnavailable
from runforgectl.output import duration, truncate

# With no event for this long, ask the daemon directly (covers a terminal event that was
# published before our subscription took effect).
IDLE_CHECK_S = 1.0


def follow_run(
    client: Client,
    workspace: str,
    run_id: str,
    since: int,
    on_event: Callable[[m.Event], None],
) -> m.Event | None:
    """Deliver every event of the run with ``run_seq > since`` exactly once and in order,
    until its ``run_terminal`` event; return that event."""
    client.subscribe(ev.run_topic_prefix(workspace, run_id))
    last = since
    terminal: m.Event | None = None

    def replay() -> bool:
        nonlocal last, terminal
        while True:
            result = _replay_across_restarts(client, workspace, run_id, last)
            assert isinstance(result, m.ReplayResult)
            for event in result.events:
                if event.run_seq > last:
                    last = event.run_seq
                    on_event(event)
                    if event.type == ev.RUN_TERMINAL:
                        terminal = event
            if not result.events or last >= result.last_run_seq:
                return result.terminal

    if replay():
        return terminal
    idle_since = time.monotonic()
    while terminal is None:
        got_any = False
        for event in client.next_events(timeout_s=0.2):
            got_any = True
            if event.run_seq <= last:
                continue  # already delivered by a replay
            if event.run_seq > last + 1:
                replay()  # a gap: fill it from the persisted events
                if event.run_seq <= last:
                    continue
            last = event.run_seq
            on_event(event)
            if event.type == ev.RUN_TERMINAL:
                terminal = event
                break
        if got_any:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > IDLE_CHECK_S:
            if replay():
                break
            idle_since = time.monotonic()
    return terminal


# A daemon restart (its runs carry on under their monitors) is waited out this long.
RESTART_PATIENCE_S = 60.0


def _replay_across_restarts(client: Client, workspace: str, run_id: str, since: int) -> m.Result:
    """``replay``, retried while the daemon is away (restarting): the run goes on under
    its monitor, and the next daemon answers from where we left off."""
    give_up = time.monotonic() + RESTART_PATIENCE_S
    while True:
        try:
            return client.result(
                m.Replay(workspace=workspace, run_id=run_id, since=since), timeout_s=2.0
            )
        except DaemonUnavailable:
            if time.monotonic() > give_up:
                raise
            time.sleep(0.1)


class ProgressDisplay:
    """Renders a run's events for a person: one redrawn line on a terminal, plain lines
    otherwise."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        # A redrawn line needs a terminal that understands "\r" and erase-line; a dumb one
        # gets the plain, throttled lines a pipe gets.
        self.tty = self.out.isatty() and os.environ.get("TERM", "") != "dumb"
        self.started: float | None = None
        # Steps are timed from train_started: queueing and start-up are not training.
        self.training_started: float | None = None
        self.family = ""
        self._last_progress: dict[str, Any] = {}
        self._line_open = False
        self._last_status = 0.0

    # Off a terminal, progress lines are throttled to one per this many seconds.
    PLAIN_STATUS_INTERVAL_S = 1.0

    def _status(self, text: str, *, force: bool = False) -> None:
        if self.tty:
            # Cut to the terminal's width (asked each time: it may be resized): a line that
            # wraps cannot be redrawn and leaves stale rows behind.
            self.out.write("\r\033[K" + truncate(text, self._columns() - 1))
            self._line_open = True
        else:
            now = time.monotonic()
            if not force and now - self._last_status < self.PLAIN_STATUS_INTERVAL_S:
                return
            self._last_status = now
            self.out.write(text + "\n")
        self.out.flush()

    def _columns(self) -> int:
        try:
            return max(10, os.get_terminal_size(self.out.fileno()).columns)
        except (OSError, ValueError):
            return 80

    def _say(self, text: str) -> None:
        if self._line_open:
            self.out.write("\n")
            self._line_open = False
        self.out.write(text + "\n")
        self.out.flush()

    def __call__(self, event: m.Event) -> None:
        data: dict[str, Any] = event.data
        kind = event.type
        if self.started is None:
            self.started = event.ts
        elapsed = event.ts - self.started
        if kind == "run_start":
            family, preset = data.get("model_family", "?"), data.get("preset_id", "?")
            self.family = str(family)
            self._say(f"run {event.run_id}: {family} ({preset})")
        elif kind == "dataset_loaded":
            self._say(
                f"dataset: {data.get('num_samples')} rows, {data.get('num_features')} features"
                f", label '{data.get('label_column', 'label')}'"
            )
        elif kind == "train_started":
            self.training_started = event.ts
            self.family = str(data.get("model_family", self.family))
        elif kind == "train_progress":
            self._last_progress = data
            self._status(self._progress_line(event, elapsed), force=self._progress_final(data))
        elif kind == "train_finished":
            self._say(f"training finished in {duration(elapsed)}{self._outcome()}")
        elif kind == "metrics_computed":
            self._say("metrics computed")
        elif kind == ev.CANCEL_REQUESTED:
            self._say(f"cancel requested (grace {data.get('grace_s', '?')} s)")
        elif kind == ev.CANCEL_COUNTDOWN:
            self._status(f"Cancelling… {data.get('seconds_remaining')} s", force=True)
        elif kind == "cancelling":
            self._status(
                f"Cancelling… {data.get('seconds_remaining')} s (trainer flushing)", force=True
            )
        elif kind == ev.CANCEL_ESCALATED:
            self._say("grace expired: process tree killed (SIGKILL)")
        elif kind == ev.INDEX_ORPHANED:
            err = data.get("error", {})
            self._say(f"! index update failed ({err.get('message', '?')}); run is orphaned")
        elif kind == ev.RUN_TERMINAL:
            self._say(f"run {event.run_id}: {data.get('state')}")
        elif kind == "run_failed":
            err = data.get("error", {})
            self._say(f"runner error: {err.get('message', '?')}")

    def _ceiling(self) -> bool:
        """True when ``total_epochs`` is ``max_iter``, a ceiling (see CEILING_FAMILIES)."""
        return self.family in CEILING_FAMILIES

    def _progress_final(self, data: dict[str, Any]) -> bool:
        epoch, total = _steps(data)
        return not self._ceiling() and epoch >= total

    def _progress_line(self, event: m.Event, elapsed: float) -> str:
        """Steps done, the numbers, elapsed, and an ETA only where it means something: for
        a fixed amount of work, from the mean time per step; for a fit that stops when
        it converges, only as the bound "if it runs to max_iter" (the fit may stop at any
        iteration: no percentage, no plain ETA)."""
        data: dict[str, Any] = event.data
        epoch, total = _steps(data)
        ceiling = self._ceiling()
        if not ceiling:
            parts = [f"step {epoch}/{total}"]
        elif epoch == 0 and "loss" not in data and "val_accuracy" not in data:
            parts = [f"fitting (no iteration reported yet; max_iter {total})"]
        else:
            parts = [f"iteration {epoch} (max_iter {total})"]
        if "val_accuracy" in data:
            parts.append(f"val_acc {data['val_accuracy']:.4f}")
        if "loss" in data:
            parts.append(f"loss {data['loss']:.4f}")
        parts.append(f"elapsed {duration(elapsed)}")
        if epoch > 0 and total > epoch:
            training = event.ts - (self.training_started or self.started or event.ts)
            remaining = duration(training / epoch * (total - epoch))
            parts.append(f"ETA ≤ {remaining} (at max_iter)" if ceiling else f"ETA {remaining}")
        return "  ".join(parts)

    def _outcome(self) -> str:
        """How the fit ended, read from the last progress event (the bundled runner's last
        one carries the final count): converged before max_iter, or stopped by it."""
        if not self._last_progress:
            return ""
        epoch, total = _steps(self._last_progress)
        if not self._ceiling():
            return f" ({epoch}/{total} steps)"
        if epoch < total:
            return f": converged after {epoch} iterations (max_iter {total})"
        return f": stopped at max_iter ({total}) before converging"


def _steps(data: dict[str, Any]) -> tuple[int, int]:
    """(epoch, total_epochs) of a train_progress event, tolerant of a foreign trainer's
    odd values (the daemon checked only their types)."""
    try:
        epoch = max(0, int(data.get("epoch", 0)))
        total = max(1, int(data.get("total_epochs", 1) or 1))
    except (TypeError, ValueError):
        return 0, 1
    return epoch, total
