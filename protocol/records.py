"""What the wire carries of the daemon's records: run and index states, a run's outcome
(``result.json``, also the ``run_terminal`` event's data) and recovery's report. The
daemon's other on-disk formats are ``runforged/disk_formats.py``."""

from __future__ import annotations

import enum

import msgspec


class RunState(str, enum.Enum):
    """Lifecycle of a run: queued -> running -> cancelling -> one terminal state."""

    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    CANCELLED_GRACEFUL = "cancelled_graceful"
    CANCELLED_FORCED = "cancelled_forced"
    FAILED = "failed"
    LOST = "lost"  # the daemon died while the run was in flight; decided on the next start

    @property
    def terminal(self) -> bool:
        return self not in (RunState.QUEUED, RunState.RUNNING, RunState.CANCELLING)


class IndexStatus(str, enum.Enum):
    """Whether a run is in the workspace index; separate from its lifecycle state."""

    INDEXED = "indexed"
    ORPHANED = "orphaned"  # completed, but the index update failed (``.index-orphan``)
    NOT_INDEXED = "not_indexed"  # never indexed: cancelled, failed, lost


class IndexErrorInfo(msgspec.Struct, kw_only=True):
    type: str
    message: str


class ResultRecord(msgspec.Struct, kw_only=True):
    """``<run dir>/result.json``: the outcome, written by the daemon once the run is terminal."""

    schema_version: str = "runforge.result.v1"
    run_id: str
    run_dir: str
    state: RunState
    exit_code: int | None = None
    started_at: str | None = None
    finished_at: str
    duration_ms: int | None = None  # measured by the daemon: spawn to exit
    device: str = "cpu"
    reason: str = ""  # why it failed / how it was cancelled; "" when completed normally
    cancel_requested: bool = False
    partial_artifacts: list[str] = []  # workspace-relative, from the .cancelled marker
    final_metrics: dict[str, float] = {}
    index_status: IndexStatus = IndexStatus.NOT_INDEXED
    index_error: IndexErrorInfo | None = None


# --------------------------------------------------------------------------- recovery


class RecoveryReason(str, enum.Enum):
    """Best-effort classification of why a run was missing from the index."""

    INDEX_ORPHAN_MARKER = "index_orphan_marker"  # its index update failed and said so
    CANCELLED = "cancelled"  # cancelled runs are never indexed
    PRE_EXISTING_ORPHAN = "pre_existing_orphan"  # missing with no marker (crash, old writer)


class RecoverySkipError(str, enum.Enum):
    """Why a run folder could not be recovered."""

    CORRUPT_RUN_JSON = "CORRUPT_RUN_JSON"  # not JSON, or lacks what an index entry needs
    MISSING_RUN_JSON = "MISSING_RUN_JSON"  # the run never completed (failed, lost, foreign)
    READ_ERROR = "READ_ERROR"  # a file could not be read, or request/result.json is corrupt


class RecoveryItem(msgspec.Struct, kw_only=True):
    """A run recovered into the index, or a cancelled run kept out of it."""

    run_id: str  # from the run's files; the folder name only when no file names it
    run_dir: str  # workspace-relative, forward slashes
    reason: RecoveryReason


class RecoverySkip(msgspec.Struct, kw_only=True):
    """A run folder recovery could not index."""

    run_dir: str
    error: RecoverySkipError
    message: str


class RecoveryReport(msgspec.Struct, kw_only=True):
    """What one Recover Index call did (issue 6, "Recover Index").

    Every folder walked is counted exactly once in ``scanned_run_dirs`` and in exactly one
    of: ``already_indexed``, ``recovered``, ``skipped``, ``cancelled_excluded``,
    ``in_flight``. ``already_indexed`` counts walked folders whose run the index listed
    before this call (by ``run_dir`` or by the ``run_id`` in ``run.json``).

    Optional extras (defaults when nothing happened):
    ``in_flight`` — folders of runs the daemon owned during the call: neither indexed nor
    reported as broken, counted only here. ``corrupt_index_kept_as`` — workspace-relative
    paths where an unreadable index was moved aside (``index.json.corrupt.<timestamp>``)
    since the last report; the index was rebuilt from the run folders. ``index_created`` —
    there was no index file (missing or moved aside) and this call wrote one.
    """

    scanned_run_dirs: int
    already_indexed: int
    recovered: list[RecoveryItem]
    skipped: list[RecoverySkip]
    cancelled_excluded: list[RecoveryItem]
    recovered_at: str  # ISO 8601 UTC
    in_flight: int = 0
    corrupt_index_kept_as: list[str] = []
    index_created: bool = False
