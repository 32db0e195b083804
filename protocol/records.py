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
