"""How a run ended: every terminal-state rule, in one place.

Used by the live path (the supervisor, when a trainer exits or never starts), by crash
reconciliation (runs a previous daemon left in flight), by the observability reads (a
finished run described from its folder) and by the index (which runs are cancelled,
which entries say failed). Nothing here touches a process, a socket or a file: the
callers gather the evidence (``Evidence``) through ``runforged.run_folder``.

Terminal state of a trainer that exited, first matching row wins (``exit 0`` is the
trainer's exit status):

| state              | rule                                                                  |
|--------------------|-----------------------------------------------------------------------|
| completed          | ``artifacts_written`` observed, ``run.json`` usable, and exit 0 or a  |
|                    | cancel was requested (training won the race: a runner that finished   |
|                    | and was SIGTERMed during shutdown has everything on disk)              |
| cancelled_graceful | a valid ``.cancelled`` marker, or ``run_cancelled`` observed          |
| cancelled_forced   | a cancel was requested and the exit status is non-zero                |
| failed             | anything else: non-zero exit without a cancel, or exit 0 without      |
|                    | ``run.json`` or ``artifacts_written`` ("training incomplete")          |

Whether the daemon had to SIGKILL changes the reason, never the state: the state is decided
from files and events, not from how long the exit took. A graceful marker/event without a
cancel request (someone sent SIGTERM to the trainer directly) is still a graceful cancel.

Before the trainer: a run cancelled while queued, or while its cluster job was still
pending (it never trains), is ``cancelled_graceful``; one whose trainer could not be
started (or that a cluster refused) is ``failed``. After a daemon crash (``reconciled``): a
usable ``run.json`` means completed (nobody read its stderr, so ``artifacts_written`` may
never have been seen); else a marker or ``run_cancelled`` in the event log decides as
above; else a trainer that was still alive and had to be cancelled is
``cancelled_forced``, and one that was already gone is ``lost``.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from runforge_contract import trainer_events as te
from runforge_protocol.records import ResultRecord, RunState

CANCELLED_STATES = frozenset({RunState.CANCELLED_GRACEFUL, RunState.CANCELLED_FORCED})
# States whose index entry (if the run has one) says "failed".
_FAILED_STATES = frozenset({RunState.FAILED, RunState.LOST})


class Classification(msgspec.Struct, frozen=True):
    """A run's terminal state and why, in words for ``result.json`` and ``show``."""

    state: RunState
    reason: str  # "" only for a run that completed without any cancel


class Evidence(msgspec.Struct, kw_only=True):
    """What was observed about a run whose trainer has exited."""

    cancel_requested: bool = False
    artifacts_written: bool = False  # the event was seen
    run_cancelled: bool = False  # the event was seen
    run_json_usable: bool = False
    marker_valid: bool = False  # a valid .cancelled marker
    killed: bool = False  # the daemon SIGKILLed the tree at the grace deadline
    failure_message: str = ""  # from a run_failed event, or why the spawn failed

    def note_trainer_event(self, kind: str, data: Mapping[str, Any]) -> None:
        """What a trainer's event says about how the run ended (every relay calls this:
        the monitor's, the in-process executor's and the Ray job's)."""
        if kind == te.ARTIFACTS_WRITTEN:
            self.artifacts_written = True
        elif kind == te.RUN_CANCELLED:
            self.run_cancelled = True
        elif kind == te.RUN_FAILED:
            error = data.get("error")
            if isinstance(error, dict):
                self.failure_message = str(error.get("message") or error.get("code") or "")


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


def cancelled_while_queued() -> Classification:
    return Classification(RunState.CANCELLED_GRACEFUL, "cancelled while queued; never started")


def cancelled_before_start(why: str) -> Classification:
    """Cancelled before the trainer started: e.g. a cluster job still pending for
    resources, which is stopped and never trains."""
    return Classification(
        RunState.CANCELLED_GRACEFUL, why or "cancelled before the trainer started"
    )


def never_started(failure_message: str) -> Classification:
    return Classification(RunState.FAILED, failure_message or "the trainer never started")


def trainer_exited(exit_code: int, evidence: Evidence) -> Classification:
    """The live path: the trainer this daemon supervised exited with ``exit_code``."""
    verdict = classify_terminal_state(
        exit_code=exit_code,
        cancel_requested=evidence.cancel_requested,
        artifacts_written=evidence.artifacts_written,
        run_json_exists=evidence.run_json_usable,
        marker_valid=evidence.marker_valid,
        run_cancelled=evidence.run_cancelled,
        killed=evidence.killed,
    )
    if verdict.state is RunState.FAILED and evidence.failure_message:
        return Classification(verdict.state, f"{evidence.failure_message} ({verdict.reason})")
    return verdict


def reconciled(evidence: Evidence, *, was_alive: bool) -> Classification:
    """A run a previous daemon left in flight: its trainer, if ``was_alive``, has just been
    cancelled through the cancel policy (``evidence.killed``: at the deadline). The
    evidence comes from the folder: nobody read the trainer's stderr while no daemon ran."""
    if evidence.run_json_usable:
        return Classification(
            RunState.COMPLETED,
            "completed" if evidence.artifacts_written else "finished while the daemon was down",
        )
    if evidence.marker_valid or evidence.run_cancelled:
        return classify_terminal_state(
            exit_code=1,
            cancel_requested=True,
            artifacts_written=False,
            run_json_exists=False,
            marker_valid=evidence.marker_valid,
            run_cancelled=evidence.run_cancelled,
            killed=evidence.killed,
        )
    if was_alive:
        return Classification(
            RunState.CANCELLED_FORCED,
            "cancelled when the daemon restarted after a crash: "
            + (
                "still running at the grace deadline, process tree killed"
                if evidence.killed
                else "exited with no .cancelled marker or run_cancelled"
            ),
        )
    return Classification(
        RunState.LOST, "the daemon died while the run was in flight; the trainer is gone"
    )


def monitor_lost(evidence: Evidence, *, rebooted: bool) -> Classification:
    """A run whose monitor is gone without an exit status. After a reboot the trainer
    died with the machine: lost. Otherwise the monitor was killed (SIGKILL, OOM) and its
    trainer with it (PR_SET_PDEATHSIG): the folder decides, read as after a SIGKILL."""
    if rebooted:
        return Classification(RunState.LOST, "the machine restarted while the run was in flight")
    if evidence.run_json_usable and evidence.artifacts_written:
        return Classification(
            RunState.COMPLETED,
            "completed; its monitor was killed before it recorded the exit status",
        )
    verdict = classify_terminal_state(
        exit_code=-9,
        cancel_requested=evidence.cancel_requested,
        artifacts_written=evidence.artifacts_written,
        run_json_exists=evidence.run_json_usable,
        marker_valid=evidence.marker_valid,
        run_cancelled=evidence.run_cancelled,
        killed=False,
    )
    return Classification(
        verdict.state,
        "its monitor was killed, and the trainer with it (a trainer never runs "
        f"unmonitored): {verdict.reason}",
    )


def state_on_disk(*, indexed: bool, result: ResultRecord | None, run_json_usable: bool) -> RunState:
    """A finished run described from its folder (not live in this daemon): indexed means
    completed; else ``result.json``'s verdict; else a usable ``run.json`` (a run made by
    another tool, or an orphan) means completed; else nothing says it ended: lost."""
    if indexed:
        return RunState.COMPLETED
    if result is not None:
        return result.state
    return RunState.COMPLETED if run_json_usable else RunState.LOST


def was_cancelled(result: ResultRecord | None, has_marker: Callable[[], bool]) -> bool:
    """Whether a run folder holds a cancelled run (cancelled runs are never indexed).

    The daemon's verdict in ``result.json`` wins (it also covers forced cancels, which
    leave no marker, and a completed run that won the race against a cancel). Without
    it, the runner's ``.cancelled`` marker decides (``has_marker`` is asked only then:
    recovery avoids listing a folder it does not need to).
    """
    if result is not None and result.state.terminal:
        return result.state in CANCELLED_STATES
    return has_marker()


def index_status(result: ResultRecord | None) -> str:
    """The index entry's ``status``: ``failed`` when the daemon's verdict says failed or
    lost, else ``succeeded`` (``run.json`` is the runner's last write of a good run)."""
    return "failed" if result is not None and result.state in _FAILED_STATES else "succeeded"
