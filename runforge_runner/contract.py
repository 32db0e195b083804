"""The RunForge runner contract for any trainer: events, cancel handling, files, exit codes.

Standard library only (plus the stdlib-only ``runforge_contract``), so a user's own
trainer can import it under any interpreter. A trainer builds a :class:`TrainerSession` for its run
folder, emits events through it, calls :meth:`TrainerSession.checkpoint` between chunks
of work, and hands its training function to :meth:`TrainerSession.run`, which turns a
SIGTERM into the graceful cancel path (countdown, flush, ``.cancelled`` marker,
``run_cancelled``) and any failure into a ``run_failed`` event and an exit code.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from runforge_contract.atomicio import write_bytes_atomic, write_json_atomic
from runforge_contract.layout import CANCELLED_MARKER
from runforge_contract.run_ids import MARKER_RUN_ID_PATTERN
from runforge_contract.timestamps import utc_now
from runforge_contract.trainer_events import EMITTED_FIELDS

# Exit codes of every runforge_runner command (and of trainers that use this module).
EXIT_OK = 0
EXIT_FAILURE = 1  # anything else: training crashed, a file could not be written
EXIT_USAGE = 2  # bad arguments or environment: unknown flag, bad --param, bad --out
EXIT_BAD_DATA = 3  # the dataset cannot be used: unreadable, malformed, too small
EXIT_CANCELLED = 143  # cancelled gracefully: .cancelled written, run_cancelled emitted

# Codes carried by the run_failed event's ``error.code``.
ERROR_INVALID_ARGUMENTS = "INVALID_ARGUMENTS"
ERROR_INVALID_DATASET = "INVALID_DATASET"
ERROR_INVALID_ARTIFACT = "INVALID_ARTIFACT"  # inspect-artifact: not a loadable model
ERROR_TRAINING_FAILED = "TRAINING_FAILED"
ERROR_WRITE_FAILED = "WRITE_FAILED"
ERROR_INTERNAL = "INTERNAL_ERROR"
ERROR_MISSING_DEPENDENCY = "MISSING_DEPENDENCY"  # the interpreter lacks numpy/scikit-learn

GRACE_ENV = "RUNFORGE_CANCEL_GRACE_S"
DEFAULT_CANCEL_GRACE_S = 5.0
# The contract's cancelling event caps seconds_remaining at 60.
MAX_SECONDS_REMAINING = 60

# The run phases a cancel can be caught in, in the order a run goes through them.
STEP_DATASET_LOADING = "dataset_loading"
STEP_TRAINING = "training"
STEP_METRICS = "metrics_computation"
STEP_ARTIFACTS = "artifact_writing"
STEP_SHUTDOWN = "shutdown"
STEPS = (STEP_DATASET_LOADING, STEP_TRAINING, STEP_METRICS, STEP_ARTIFACTS, STEP_SHUTDOWN)

MARKER_NAME = CANCELLED_MARKER
MARKER_SCHEMA_VERSION = "cancelled.v1.0.0"
RUN_ID_PATTERN = MARKER_RUN_ID_PATTERN
utc_timestamp = utc_now


def cancel_grace_from_env(environ: Mapping[str, str] | None = None) -> float:
    """The grace window the daemon gives this process, from ``RUNFORGE_CANCEL_GRACE_S``."""
    env = os.environ if environ is None else environ
    raw = env.get(GRACE_ENV, "").strip()
    if not raw:
        return DEFAULT_CANCEL_GRACE_S
    try:
        grace = float(raw)
    except ValueError:
        raise TrainerError(
            ERROR_INVALID_ARGUMENTS,
            f"{GRACE_ENV}={raw!r} is not a number of seconds; set it to e.g. 5",
            EXIT_USAGE,
        ) from None
    if not math.isfinite(grace) or grace < 0:
        raise TrainerError(
            ERROR_INVALID_ARGUMENTS,
            f"{GRACE_ENV}={raw!r} must be a non-negative number of seconds",
            EXIT_USAGE,
        )
    return grace


class TrainerError(Exception):
    """A failure the user should see as one line: becomes ``run_failed`` and an exit code."""

    def __init__(self, code: str, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.exit_code = exit_code


class RunCancelled(BaseException):
    """Raised by :meth:`TrainerSession.checkpoint` once a cancel was requested.

    A ``BaseException`` so that a trainer's ``except Exception`` does not swallow it."""


class CancelSignal:
    """The SIGTERM (and SIGINT) latch: records the first request, ignores the rest.

    Install it as the very first thing a trainer does, before any slow import, so that a
    signal at any moment after start-up leads to the graceful path. The request is seen
    twice over: by a Python handler, and, at the instant of delivery, by a watcher thread
    woken through ``signal.set_wakeup_fd``. Python runs handlers only between bytecodes,
    so while the main thread sits in a long scikit-learn call the watcher is what starts
    the countdown on time. Neither path writes anything, so neither can interleave with an
    event line being printed.
    """

    CANCEL_SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.requested_at: float | None = None
        self.signal_name = ""
        self._requested = threading.Event()

    @classmethod
    def install(cls) -> CancelSignal:
        latch = cls()
        for signum in cls.CANCEL_SIGNALS:
            signal.signal(signum, latch._handle)
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        threading.Thread(
            target=latch._watch, args=(read_fd,), name="runforge-cancel-watch", daemon=True
        ).start()
        return latch

    @property
    def requested(self) -> bool:
        return self.requested_at is not None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a cancel is requested (or ``timeout``); True if it was."""
        return self._requested.wait(timeout)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.request(signum)

    def _watch(self, read_fd: int) -> None:
        while True:
            delivered = os.read(read_fd, 64)
            if not delivered:
                return
            for signum in delivered:
                if signum in self.CANCEL_SIGNALS:
                    self.request(signum)

    def request(self, signum: int = signal.SIGTERM) -> None:
        """Request a cancel as if ``signum`` had arrived (what the handlers call)."""
        # A second signal, or one during the flush, changes nothing: the first request
        # already set the deadline and the flush is under way.
        if self.requested_at is not None:
            return
        self.signal_name = signal.Signals(signum).name
        self.requested_at = time.monotonic()
        self._requested.set()


class _Countdown(threading.Thread):
    """Emits ``cancelling`` at the request and once a second after, until stopped."""

    def __init__(self, session: TrainerSession) -> None:
        super().__init__(name="runforge-cancel-countdown", daemon=True)
        self._session = session
        self._stopped = threading.Event()
        self.first_emitted = threading.Event()
        # Taken to start counting down and to stop: once stopped, no countdown starts.
        self._lock = threading.Lock()
        self._counting = False

    def run(self) -> None:
        latch = self._session.cancel_signal
        while not latch.wait(timeout=0.5):
            if self._stopped.is_set():
                return
        with self._lock:
            if self._stopped.is_set():
                return
            self._counting = True
        requested_at = latch.requested_at
        assert requested_at is not None
        step = self._session.step
        self._session.cancel_step = step
        # Tick k is due k seconds after the request and shows the whole seconds left then,
        # rounded down so the countdown never promises more time than the daemon gives.
        whole_seconds = math.floor(self._session.grace_s)
        tick = 0
        while True:
            seconds = min(MAX_SECONDS_REMAINING, max(0, whole_seconds - tick))
            self._session.emit("cancelling", seconds_remaining=seconds, step=step)
            self.first_emitted.set()
            if seconds == 0:
                return
            tick += 1
            next_tick = requested_at + tick
            if self._stopped.wait(timeout=max(0.0, next_tick - time.monotonic())):
                return

    def stop(self) -> None:
        """No ``cancelling`` event after this returns. Waits for the thread only if it is
        counting down (it leaves at once then); one still waiting for a request notices
        within half a second and emits nothing, so the run does not wait for it."""
        with self._lock:
            self._stopped.set()
            counting = self._counting
        if counting:
            self.join()


class TrainerSession:
    """One run of a trainer: its run folder, its events, its cancel handling, its files.

    ``out_dir`` is the run folder; its name is the run id used in every event and file.
    Paths reported to the daemon are relative to the working directory (the workspace)
    with forward slashes.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        *,
        cancel_signal: CancelSignal | None = None,
        grace_s: float | None = None,
        stream: TextIO | None = None,
    ) -> None:
        out = Path(os.path.abspath(out_dir))
        if not RUN_ID_PATTERN.fullmatch(out.name) or out.name in (".", ".."):
            raise TrainerError(
                ERROR_INVALID_ARGUMENTS,
                f"the run folder name {out.name!r} is not a valid run id "
                "(use letters, digits, '.', '_' and '-', at most 256 characters)",
                EXIT_USAGE,
            )
        self.run_id = out.name
        self.run_dir = out
        self.run_dir_relative = workspace_relative(out)
        self.cancel_signal = cancel_signal or CancelSignal.install()
        self.grace_s = cancel_grace_from_env() if grace_s is None else grace_s
        self.step = STEP_DATASET_LOADING
        self.cancel_step = STEP_DATASET_LOADING
        self._stream = stream
        self._emit_lock = threading.Lock()
        self._flush: Callable[[], object] | None = None
        self._written: list[Path] = []
        self._countdown = _Countdown(self)
        self._countdown.start()

    # Events -----------------------------------------------------------------------

    def emit(self, event: str, **fields: Any) -> None:
        """Print one contract event as a JSON line on stderr, flushed at once."""
        line = format_event(event, self.run_id, **fields)
        stream = self._stream or sys.stderr
        with self._emit_lock:
            stream.write(line)
            stream.flush()

    def log(self, message: str) -> None:
        """A free-form log line on stderr (the daemon keeps it in logs.txt)."""
        stream = self._stream or sys.stderr
        with self._emit_lock:
            stream.write(message.rstrip("\n") + "\n")
            stream.flush()

    # Steps and cancel -------------------------------------------------------------

    def enter_step(self, step: str) -> None:
        """Record the run phase that a cancel arriving from now on is caught in."""
        if step not in STEPS:
            raise ValueError(f"unknown step {step!r}; one of {', '.join(STEPS)}")
        self.step = step

    @property
    def cancel_requested(self) -> bool:
        return self.cancel_signal.requested

    def checkpoint(self) -> None:
        """Raise :class:`RunCancelled` if a cancel was requested. Call between chunks."""
        if self.cancel_signal.requested:
            raise RunCancelled()

    def on_cancel(self, flush: Callable[[], object] | None) -> None:
        """Set what to save when cancelled (replaces the previous callback).

        The callback runs on the main thread while the countdown ticks; it should write
        the partial state with :meth:`write_json` / :meth:`write_bytes` and return."""
        self._flush = flush

    # Files ------------------------------------------------------------------------

    def write_bytes(self, name: str, data: bytes) -> Path:
        """Atomically write ``name`` in the run folder and remember it as an artifact."""
        path = self.run_dir / name
        try:
            write_bytes_atomic(path, data)
        except OSError as error:
            raise _write_failed(path, error) from error
        self._remember(path)
        return path

    def write_json(self, name: str, document: Any) -> Path:
        """Atomically write ``document`` as JSON in the run folder; remember it."""
        path = self.run_dir / name
        try:
            write_json_atomic(path, document)
        except OSError as error:
            raise _write_failed(path, error) from error
        self._remember(path)
        return path

    @property
    def written_artifacts(self) -> list[str]:
        """Workspace-relative paths of every file written through this session."""
        return [workspace_relative(path) for path in self._written]

    def _remember(self, path: Path) -> None:
        if path not in self._written:
            self._written.append(path)

    def write_cancelled_marker(self, reason: str) -> Path:
        """Write ``.cancelled`` (schema cancelled.v1.0.0) atomically in the run folder."""
        marker = {
            "schema_version": MARKER_SCHEMA_VERSION,
            "run_id": self.run_id,
            "run_dir": self.run_dir_relative,
            "cancelled_at": utc_timestamp(),
            "step": self.cancel_step,
            "reason": reason,
            "partial_artifacts": self.written_artifacts,
        }
        path = self.run_dir / MARKER_NAME
        write_json_atomic(path, marker)
        return path

    # The whole run ----------------------------------------------------------------

    def run(self, train: Callable[[TrainerSession], object]) -> int:
        """Run ``train(self)`` under the contract and return the process exit code.

        Returns ``EXIT_OK`` when ``train`` returns (even if a cancel arrived too late to
        stop it: the run completed), ``EXIT_CANCELLED`` after the graceful cancel path,
        and the error's exit code after emitting ``run_failed``."""
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            train(self)
        except RunCancelled:
            return self._finish_cancelled()
        except TrainerError as error:
            if self.cancel_requested:
                self.log(f"error while cancelling: {error.message}")
                return self._finish_cancelled()
            self._countdown.stop()
            self.fail(error)
            return error.exit_code
        except Exception as error:
            self.log(traceback.format_exc())
            if self.cancel_requested:
                return self._finish_cancelled()
            self._countdown.stop()
            if isinstance(error, ModuleNotFoundError) and error.name:
                self.fail(
                    TrainerError(
                        ERROR_MISSING_DEPENDENCY,
                        f"the interpreter {sys.executable} cannot import {error.name}: install"
                        f" it there (pip install numpy scikit-learn) or point pythonPath at"
                        f" an interpreter that has it",
                    )
                )
            else:
                self.fail(TrainerError(ERROR_INTERNAL, f"{type(error).__name__}: {error}"))
            return EXIT_FAILURE
        self._countdown.stop()
        return EXIT_OK

    def fail(self, error: TrainerError) -> None:
        """Emit ``run_failed`` with the error's code and message (one line, actionable)."""
        payload = {"code": error.code, "message": error.message}
        self.emit("run_failed", error=payload, step=self.step)

    def _finish_cancelled(self) -> int:
        # The countdown thread may not have seen the request yet if it arrived a moment
        # ago; waiting for its first event keeps "cancelling" first and fixes the step.
        self._countdown.first_emitted.wait()
        if self._flush is not None:
            try:
                self._flush()
            except Exception as error:
                # Half a flush still deserves a marker: the daemon must not mistake a
                # graceful cancel for a forced one because one partial file failed.
                self.log(f"flush of partial state failed: {type(error).__name__}: {error}")
        reason = f"{self.cancel_signal.signal_name or 'SIGTERM'} received"
        self.write_cancelled_marker(reason)
        self._countdown.stop()
        self.emit("run_cancelled", step=self.cancel_step, reason=reason, graceful=True)
        return EXIT_CANCELLED


def _write_failed(path: Path, error: OSError) -> TrainerError:
    return TrainerError(
        ERROR_WRITE_FAILED,
        f"cannot write {workspace_relative(path)}: {error.strerror or error}; "
        "check free space and permissions",
    )


def format_event(event: str, run_id: str | None, **fields: Any) -> str:
    """One event as a JSON line; raises ``ValueError`` if its fields break the contract.

    ``run_id`` may be None only for ``run_failed`` before the run folder is known."""
    spec = EMITTED_FIELDS.get(event)
    if spec is None:
        raise ValueError(f"unknown event type {event!r}")
    required, optional = spec
    missing = required - fields.keys()
    unknown = fields.keys() - required - optional
    if missing or unknown:
        raise ValueError(
            f"event {event!r}: missing {sorted(missing)}, not allowed {sorted(unknown)}"
        )
    if run_id is None and event != "run_failed":
        raise ValueError(f"event {event!r} needs a run id")
    record: dict[str, Any] = {"event": event, "timestamp": utc_timestamp()}
    if run_id is not None:
        record["run_id"] = run_id
    record.update(fields)
    return json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n"


def emit_run_failed(error: TrainerError, run_id: str | None, stream: TextIO | None = None) -> None:
    """Report a failure that happened before a :class:`TrainerSession` could exist."""
    payload = {"code": error.code, "message": error.message}
    out = stream or sys.stderr
    out.write(format_event("run_failed", run_id, error=payload, step=STEP_DATASET_LOADING))
    out.flush()


def workspace_relative(path: Path) -> str:
    """``path`` relative to the working directory with forward slashes; absolute if outside."""
    absolute = Path(os.path.abspath(path))
    try:
        relative = absolute.relative_to(Path(os.getcwd()).resolve())
    except ValueError:
        try:
            relative = absolute.relative_to(Path(os.getcwd()))
        except ValueError:
            return absolute.as_posix()
    return relative.as_posix()
