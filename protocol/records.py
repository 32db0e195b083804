"""Run states and the daemon's own per-run files (request.json, result.json)."""

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


class RequestRecord(msgspec.Struct, kw_only=True):
    """``<run dir>/request.json``: what was asked for and what was resolved, written by the
    daemon before the runner starts."""

    schema_version: str = "runforge.request.v1"
    run_id: str
    workspace: str  # absolute, symlinks resolved
    run_dir: str  # workspace-relative, forward slashes: ".ml/runs/<run_id>"
    created_at: str  # ISO 8601 UTC
    name: str
    preset: str
    model: str | None = None
    profile: str | None = None
    seed: int | None = None
    params: dict[str, str] = {}
    device: str = "cpu"
    dataset_path: str = ""  # absolute
    python_path: str = ""
    runner_module: str = ""
    cancel_grace_s: float = 5.0
    argv: list[str] = []


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


# --------------------------------------------------------------------------- the index


class IndexSummary(msgspec.Struct, kw_only=True, gc=False):
    """``summary`` of an index entry (index schema v1.0.0)."""

    duration_ms: int
    final_metrics: dict[str, float]
    device: str  # "cpu" | "cuda"


class IndexEntry(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """One run in ``.ml/outputs/index.json``.

    Entries the daemon writes carry all ten fields of index schema v1.0.0. Entries written
    by older RunForge versions (schema v0.2.2.1: six fields, or the legacy bare array) are
    read and kept as they are, so every field but ``run_id`` may be absent; absent fields
    are omitted again when the index is rewritten. Field order is the schema's.
    ``gc=False``: an index holds up to 10^5 of these and none can be part of a cycle.
    """

    run_id: str
    created_at: str | None = None
    name: str | None = None
    preset_id: str | None = None  # "std-train" | "hq-train"
    status: str | None = None  # "succeeded" | "failed"
    summary: IndexSummary | None = None
    run_dir: str | None = None  # workspace-relative, forward slashes
    dataset_fingerprint_sha256: str | None = None
    label_column: str | None = None
    model_pkl: str | None = None  # workspace-relative


class IndexFile(msgspec.Struct, kw_only=True):
    """``.ml/outputs/index.json`` in its canonical envelope (the daemon always writes this)."""

    schema_version: str  # "1.0.0"; "0.2.2.1" in indexes written by older RunForge versions
    runs: list[IndexEntry]


class IndexOrphanMarker(msgspec.Struct, kw_only=True):
    """``<run dir>/.index-orphan`` (index-orphan schema v1.0.0): the run completed but its
    index update failed."""

    schema_version: str = "index-orphan.v1.0.0"
    run_id: str
    run_dir: str  # workspace-relative, forward slashes
    written_at: str  # ISO 8601 UTC
    error: IndexErrorInfo
    index_path: str  # workspace-relative, forward slashes


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
